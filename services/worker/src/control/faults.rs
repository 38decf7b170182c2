//! Injected faults: validation, scope matching, delay sampling.

use std::time::{Duration, SystemTime};

use rand::Rng;
use testbed_proto::prost::bytes::Bytes;
use testbed_proto::raw::{EventRef, PayloadRef};
use testbed_proto::v1::{
    DelayDistribution, DelayFault, Fault, FaultScope, InjectFaultRequest, PayloadKind,
    fault::Effect,
};

use crate::control::error::ControlError;

/// Longest injectable delay per entry.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Fault time-to-live bounds.
pub const TTL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));

fn duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    let d = d?;
    (d.seconds >= 0 && (0..1_000_000_000).contains(&d.nanos))
        .then(|| Duration::new(d.seconds as u64, d.nanos as u32))
}

/// Validates an InjectFault request and returns the fault to store, with a
/// fresh server-assigned id and its expiry.
pub fn validate(request: InjectFaultRequest, now: SystemTime) -> Result<Fault, ControlError> {
    let ttl = duration(request.ttl.as_ref())
        .ok_or_else(|| ControlError::field("ttl", "is required: faults expire by themselves"))?;
    if ttl < TTL_RANGE.0 || ttl > TTL_RANGE.1 {
        return Err(ControlError::field("ttl", "must be between 1s and 24h"));
    }
    let mut fault = request
        .fault
        .ok_or_else(|| ControlError::field("fault", "is required"))?;
    let scope = fault.scope.get_or_insert_with(FaultScope::default);
    if scope.device_prefix.chars().count() > 128 {
        return Err(ControlError::field(
            "fault.scope.device_prefix",
            "must be at most 128 characters",
        ));
    }
    if PayloadKind::try_from(scope.payload_kind).is_err() {
        return Err(ControlError::field(
            "fault.scope.payload_kind",
            "unknown payload kind",
        ));
    }
    match &fault.effect {
        None => {
            return Err(ControlError::field(
                "fault.effect",
                "one of delay or failure is required",
            ));
        }
        Some(Effect::Delay(delay)) => {
            let max = duration(delay.delay.as_ref())
                .ok_or_else(|| ControlError::field("fault.delay.delay", "is required"))?;
            if max.is_zero() || max > MAX_DELAY {
                return Err(ControlError::field(
                    "fault.delay.delay",
                    "must be above 0 and at most 60s",
                ));
            }
            let distribution = DelayDistribution::try_from(delay.distribution).map_err(|_| {
                ControlError::field("fault.delay.distribution", "unknown distribution")
            })?;
            if distribution == DelayDistribution::Uniform {
                let min = duration(delay.min.as_ref()).unwrap_or_default();
                if min > max {
                    return Err(ControlError::field(
                        "fault.delay.min",
                        "must not exceed delay",
                    ));
                }
            }
        }
        Some(Effect::Failure(failure)) => {
            if !(failure.ratio > 0.0 && failure.ratio <= 1.0) {
                return Err(ControlError::field(
                    "fault.failure.ratio",
                    "must be within (0, 1]",
                ));
            }
        }
    }
    fault.id = format!("f-{:08x}", rand::rng().random::<u32>());
    fault.expire_time = Some(prost_types::Timestamp::from(now + ttl));
    Ok(fault)
}

/// Whether the fault has expired at `now`.
pub fn expired(fault: &Fault, now: SystemTime) -> bool {
    let Some(at) = &fault.expire_time else {
        return true;
    };
    SystemTime::try_from(*at).map_or(true, |at| at <= now)
}

fn kind(event: &EventRef<'_>) -> PayloadKind {
    match event.payload {
        Some(PayloadRef::Gpu(_)) => PayloadKind::Gpu,
        Some(PayloadRef::Tokens(_)) => PayloadKind::Tokens,
        Some(PayloadRef::Metric(_)) => PayloadKind::Metric,
        None => PayloadKind::Unspecified,
    }
}

/// Whether `fault` applies to an entry holding the encoded `events`: it
/// does when any of them is in scope (an entry is processed, delayed or
/// failed as a whole).
pub fn matches(fault: &Fault, events: &[Bytes]) -> bool {
    let scope = fault.scope.clone().unwrap_or_default();
    let want = PayloadKind::try_from(scope.payload_kind).unwrap_or(PayloadKind::Unspecified);
    let mut events = events.iter().filter_map(|b| EventRef::decode(b).ok());
    events.any(|e| {
        e.device_id.starts_with(scope.device_prefix.as_bytes())
            && (want == PayloadKind::Unspecified || kind(&e) == want)
    })
}

/// A delay drawn from the fault's distribution.
pub fn sample_delay(delay: &DelayFault, rng: &mut impl Rng) -> Duration {
    let max = duration(delay.delay.as_ref())
        .unwrap_or_default()
        .min(MAX_DELAY);
    match DelayDistribution::try_from(delay.distribution).unwrap_or(DelayDistribution::Fixed) {
        DelayDistribution::Unspecified | DelayDistribution::Fixed => max,
        DelayDistribution::Uniform => {
            let min = duration(delay.min.as_ref()).unwrap_or_default().min(max);
            min + (max - min).mul_f64(rng.random::<f64>())
        }
        DelayDistribution::Exponential => {
            // Inverse transform sampling with mean `delay`, capped.
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            max.mul_f64(-u.ln()).min(MAX_DELAY)
        }
    }
}

#[cfg(test)]
mod tests {
    use testbed_proto::prost::Message as _;
    use testbed_proto::v1::FailureFault;

    use super::*;

    fn request(effect: Effect, ttl_secs: i64) -> InjectFaultRequest {
        InjectFaultRequest {
            fault: Some(Fault {
                effect: Some(effect),
                ..Default::default()
            }),
            ttl: Some(prost_types::Duration {
                seconds: ttl_secs,
                nanos: 0,
            }),
        }
    }

    fn field(r: InjectFaultRequest) -> &'static str {
        match validate(r, SystemTime::now()) {
            Err(ControlError::InvalidField { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    /// Valid faults get an id and an expiry ttl from now.
    #[test]
    fn valid_fault_gets_id_and_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let f = validate(
            request(Effect::Failure(FailureFault { ratio: 0.5 }), 30),
            now,
        )
        .unwrap();
        assert!(f.id.starts_with("f-"));
        assert_eq!(f.expire_time.unwrap().seconds, 1030);
        assert!(!expired(&f, now));
        assert!(expired(&f, now + Duration::from_secs(30)));
    }

    /// Each bad field is named.
    #[test]
    fn bad_fields_are_named() {
        let ok = Effect::Failure(FailureFault { ratio: 0.5 });
        assert_eq!(
            field(InjectFaultRequest {
                ttl: None,
                ..request(ok, 1)
            }),
            "ttl"
        );
        assert_eq!(field(request(ok, 0)), "ttl");
        assert_eq!(field(request(ok, 90_000)), "ttl");
        assert_eq!(
            field(InjectFaultRequest {
                fault: None,
                ..request(ok, 5)
            }),
            "fault"
        );
        assert_eq!(
            field(request(Effect::Failure(FailureFault { ratio: 1.5 }), 5)),
            "fault.failure.ratio"
        );
        assert_eq!(
            field(request(
                Effect::Failure(FailureFault { ratio: f64::NAN }),
                5
            )),
            "fault.failure.ratio"
        );
        let no_delay = Effect::Delay(DelayFault::default());
        assert_eq!(field(request(no_delay, 5)), "fault.delay.delay");
        let too_long = Effect::Delay(DelayFault {
            delay: Some(prost_types::Duration {
                seconds: 61,
                nanos: 0,
            }),
            ..Default::default()
        });
        assert_eq!(field(request(too_long, 5)), "fault.delay.delay");
        let mut r = request(Effect::Failure(FailureFault { ratio: 0.1 }), 5);
        r.fault.as_mut().unwrap().effect = None;
        assert_eq!(field(r), "fault.effect");
    }

    /// Scope: device prefix and payload kind.
    #[test]
    fn scope_matching() {
        let gpu = Bytes::from(
            testbed_proto::v1::Event {
                device_id: "dev-12".into(),
                payload: Some(testbed_proto::v1::event::Payload::Gpu(Default::default())),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let mut f = Fault {
            scope: Some(FaultScope {
                device_prefix: "dev-1".into(),
                payload_kind: 0,
            }),
            ..Default::default()
        };
        assert!(matches(&f, std::slice::from_ref(&gpu)));
        f.scope.as_mut().unwrap().payload_kind = PayloadKind::Tokens as i32;
        assert!(!matches(&f, std::slice::from_ref(&gpu)));
        f.scope = Some(FaultScope {
            device_prefix: "other".into(),
            payload_kind: 0,
        });
        assert!(!matches(&f, &[gpu]));
    }

    /// Sampled delays stay within their distribution's bounds.
    #[test]
    fn delays_are_bounded() {
        let mut rng = rand::rng();
        let d = |s: i64, ms: i32| {
            Some(prost_types::Duration {
                seconds: s,
                nanos: ms * 1_000_000,
            })
        };
        let fixed = DelayFault {
            distribution: 1,
            delay: d(0, 20),
            min: None,
        };
        assert_eq!(sample_delay(&fixed, &mut rng), Duration::from_millis(20));
        let uniform = DelayFault {
            distribution: 2,
            delay: d(0, 20),
            min: d(0, 10),
        };
        for _ in 0..100 {
            let v = sample_delay(&uniform, &mut rng);
            assert!(
                v >= Duration::from_millis(10) && v <= Duration::from_millis(20),
                "{v:?}"
            );
        }
        let exp = DelayFault {
            distribution: 3,
            delay: d(1, 0),
            min: None,
        };
        for _ in 0..100 {
            assert!(sample_delay(&exp, &mut rng) <= MAX_DELAY);
        }
    }
}
