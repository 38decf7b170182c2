//! Per-event validation: each rule names the offending field, so a
//! rejection tells the client exactly what to fix.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use testbed_proto::raw::{EventRef, PayloadRef};

use crate::IngestConfig;

/// Why one event was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Field path relative to the event, e.g. `gpu.utilization`.
    pub field: String,
    /// What is wrong, in words.
    pub reason: String,
}

fn violation(field: impl Into<String>, reason: impl Into<String>) -> Violation {
    Violation {
        field: field.into(),
        reason: reason.into(),
    }
}

/// 1..=128 characters of `[A-Za-z0-9._:-]`: ids and producer names.
pub fn check_id(field: &str, value: &str, required: bool) -> Result<(), Violation> {
    if value.is_empty() {
        return if required {
            Err(violation(field, "must not be empty"))
        } else {
            Ok(())
        };
    }
    if value.len() > 128 {
        return Err(violation(
            field,
            format!("must be at most 128 characters, got {}", value.len()),
        ));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
    // The first refused byte starts a character: every byte before it is ASCII.
    match value.bytes().position(|b| !allowed(b)) {
        None => Ok(()),
        Some(at) => {
            let bad = value.get(at..).and_then(|rest| rest.chars().next());
            Err(violation(
                field,
                format!(
                    "must use only [A-Za-z0-9._:-], found {:?}",
                    bad.unwrap_or('?')
                ),
            ))
        }
    }
}

/// `Err(reason)` unless `value` has `min..=max` characters.
fn check_text(value: &str, min: usize, max: usize) -> Result<(), String> {
    let len = if value.is_ascii() {
        value.len()
    } else {
        value.chars().count()
    };
    check_len(len, min, max)
}

/// `Err(reason)` unless `len` characters are `min..=max`.
fn check_len(len: usize, min: usize, max: usize) -> Result<(), String> {
    if len < min || len > max {
        return Err(format!("must be {min}..{max} characters, got {len}"));
    }
    Ok(())
}

/// The characters in `bytes`, or `None` when they are not UTF-8. Labels
/// are nearly always ASCII: one fast scan then, instead of a UTF-8
/// validation and a second scan to count.
fn chars(bytes: &[u8]) -> Option<usize> {
    if bytes.is_ascii() {
        Some(bytes.len())
    } else {
        std::str::from_utf8(bytes).ok().map(|s| s.chars().count())
    }
}

fn check_finite(field: &str, value: f64) -> Result<(), Violation> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(violation(
            field,
            format!("must be a finite number, got {value}"),
        ))
    }
}

/// `value` as text, or a violation naming `field`.
fn utf8<'a>(field: &str, value: &'a [u8]) -> Result<&'a str, Violation> {
    std::str::from_utf8(value).map_err(|e| {
        violation(
            field,
            format!(
                "must be UTF-8 text, found a bad byte at {}",
                e.valid_up_to()
            ),
        )
    })
}

/// The ids of a valid event, borrowed from its view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids<'a> {
    /// `event_id`.
    pub event_id: &'a str,
    /// `device_id`.
    pub device_id: &'a str,
    /// `run_id` (may be empty).
    pub run_id: &'a str,
}

/// Checks one event, seen through a view of its encoding (no copies),
/// against every rule; the first broken rule wins. Text that is not UTF-8
/// breaks the rule of its field, so one such event is rejected on its own.
pub fn validate<'a>(
    event: &EventRef<'a>,
    config: &IngestConfig,
    now: SystemTime,
) -> Result<Ids<'a>, Violation> {
    let ids = Ids {
        event_id: utf8("event_id", event.event_id)?,
        device_id: utf8("device_id", event.device_id)?,
        run_id: utf8("run_id", event.run_id)?,
    };
    check_id("event_id", ids.event_id, true)?;
    check_id("device_id", ids.device_id, true)?;
    check_id("run_id", ids.run_id, false)?;

    let observed = event
        .observed_at
        .as_ref()
        .ok_or_else(|| violation("observed_at", "is required"))?;
    if !(0..1_000_000_000).contains(&observed.nanos) || observed.seconds < 0 {
        return Err(violation(
            "observed_at",
            "is not a valid timestamp after 1970",
        ));
    }
    let observed_at = UNIX_EPOCH
        + Duration::from_secs(observed.seconds as u64)
        + Duration::from_nanos(observed.nanos as u64);
    if let Ok(ahead) = observed_at.duration_since(now)
        && ahead > config.max_future_skew
    {
        return Err(violation(
            "observed_at",
            format!(
                "is {} in the future; at most {} is allowed",
                humantime::format_duration(Duration::from_secs(ahead.as_secs())),
                humantime::format_duration(config.max_future_skew)
            ),
        ));
    }

    // A key sent twice counts twice here (a view keeps every entry).
    if event.labels.len() > config.max_labels {
        return Err(violation(
            "labels",
            format!(
                "at most {} labels, got {}",
                config.max_labels,
                event.labels.len()
            ),
        ));
    }
    for (key, value) in event.labels.iter() {
        // The field name is only formatted for a violation (hot path).
        let field = || format!("labels[{:?}]", String::from_utf8_lossy(key));
        let key_len = chars(key).ok_or_else(|| violation(field(), "key must be UTF-8 text"))?;
        let value_len =
            chars(value).ok_or_else(|| violation(field(), "value must be UTF-8 text"))?;
        check_len(key_len, 1, config.max_label_key_len)
            .map_err(|reason| violation(field(), reason))?;
        check_len(value_len, 0, config.max_label_value_len)
            .map_err(|reason| violation(field(), reason))?;
    }

    match event.payload {
        None => {
            return Err(violation(
                "payload",
                "one of gpu, tokens or metric is required",
            ));
        }
        Some(PayloadRef::Gpu(gpu)) => {
            check_finite("gpu.utilization", gpu.utilization)?;
            if !(0.0..=1.0).contains(&gpu.utilization) {
                return Err(violation(
                    "gpu.utilization",
                    format!("must be within 0..1, got {}", gpu.utilization),
                ));
            }
            if gpu.memory_total_bytes > 0 && gpu.memory_used_bytes > gpu.memory_total_bytes {
                return Err(violation(
                    "gpu.memory_used_bytes",
                    "must not exceed memory_total_bytes",
                ));
            }
            check_finite("gpu.temperature_celsius", gpu.temperature_celsius)?;
            check_finite("gpu.power_watts", gpu.power_watts)?;
            if gpu.power_watts < 0.0 {
                return Err(violation("gpu.power_watts", "must not be negative"));
            }
        }
        Some(PayloadRef::Tokens(tokens)) => {
            check_text(utf8("tokens.model", tokens.model)?, 1, 128)
                .map_err(|reason| violation("tokens.model", reason))?;
            check_text(utf8("tokens.tenant", tokens.tenant)?, 1, 128)
                .map_err(|reason| violation("tokens.tenant", reason))?;
            if let Some(latency) = &tokens.latency
                && (latency.seconds < 0 || latency.nanos < 0 || latency.nanos >= 1_000_000_000)
            {
                return Err(violation(
                    "tokens.latency",
                    "must be a valid, non-negative duration",
                ));
            }
        }
        Some(PayloadRef::Metric(metric)) => {
            check_text(utf8("metric.name", metric.name)?, 1, 128)
                .map_err(|reason| violation("metric.name", reason))?;
            check_finite("metric.value", metric.value)?;
            check_text(utf8("metric.unit", metric.unit)?, 0, 32)
                .map_err(|reason| violation("metric.unit", reason))?;
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use testbed_proto::prost::Message as _;
    use testbed_proto::v1::{Event, GpuSample, Metric, TokenUsage, event::Payload};
    use testbed_test_support::events;

    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn gpu_event() -> Event {
        let mut event = events::gpu_event("ev-1", "gpu-node-01", now());
        event.labels = [("arch".to_owned(), "arm64".to_owned())].into();
        event
    }

    /// The field `validate` names for `event` sent as it encodes.
    fn field_of(event: &Event) -> Option<String> {
        field_of_bytes(event.encode_to_vec())
    }

    fn field_of_bytes(bytes: Vec<u8>) -> Option<String> {
        let view = EventRef::decode(&bytes).unwrap();
        validate(&view, &IngestConfig::default(), now())
            .err()
            .map(|v| v.field)
    }

    /// A well-formed event of each kind passes.
    #[test]
    fn valid_events_pass() {
        assert_eq!(field_of(&gpu_event()), None);
        let mut e = gpu_event();
        e.payload = Some(Payload::Tokens(TokenUsage {
            model: "llama".into(),
            tenant: "team-a".into(),
            prompt_tokens: 10,
            completion_tokens: 20,
            latency: Some(prost_types::Duration {
                seconds: 1,
                nanos: 5,
            }),
        }));
        assert_eq!(field_of(&e), None);
        e.payload = Some(Payload::Metric(Metric {
            name: "fan".into(),
            value: -3.5,
            unit: "1".into(),
        }));
        assert_eq!(field_of(&e), None);
    }

    /// Each broken rule is reported against its field.
    #[test]
    fn each_rule_names_its_field() {
        type Breaker = Box<dyn Fn(&mut Event)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("event_id", Box::new(|e| e.event_id.clear())),
            ("event_id", Box::new(|e| e.event_id = "a b".into())),
            ("event_id", Box::new(|e| e.event_id = "x".repeat(129))),
            ("device_id", Box::new(|e| e.device_id = "dév".into())),
            ("run_id", Box::new(|e| e.run_id = "run/1".into())),
            ("observed_at", Box::new(|e| e.observed_at = None)),
            (
                "observed_at",
                Box::new(|e| {
                    e.observed_at = Some(prost_types::Timestamp {
                        seconds: 1_800_000_000 + 301,
                        nanos: 0,
                    })
                }),
            ),
            (
                "observed_at",
                Box::new(|e| {
                    e.observed_at = Some(prost_types::Timestamp {
                        seconds: 1,
                        nanos: -1,
                    })
                }),
            ),
            (
                "labels",
                Box::new(|e| {
                    e.labels = (0..33).map(|i| (format!("k{i}"), String::new())).collect()
                }),
            ),
            (
                "labels[\"\"]",
                Box::new(|e| {
                    e.labels.insert(String::new(), "v".into());
                }),
            ),
            (
                "labels[\"k\"]",
                Box::new(|e| {
                    e.labels.insert("k".into(), "v".repeat(257));
                }),
            ),
            ("payload", Box::new(|e| e.payload = None)),
            (
                "gpu.utilization",
                Box::new(|e| {
                    if let Some(Payload::Gpu(g)) = &mut e.payload {
                        g.utilization = f64::NAN
                    }
                }),
            ),
            (
                "gpu.utilization",
                Box::new(|e| {
                    if let Some(Payload::Gpu(g)) = &mut e.payload {
                        g.utilization = 1.01
                    }
                }),
            ),
            (
                "gpu.memory_used_bytes",
                Box::new(|e| {
                    if let Some(Payload::Gpu(g)) = &mut e.payload {
                        g.memory_used_bytes = 3
                    }
                }),
            ),
            (
                "gpu.temperature_celsius",
                Box::new(|e| {
                    if let Some(Payload::Gpu(g)) = &mut e.payload {
                        g.temperature_celsius = f64::INFINITY
                    }
                }),
            ),
            (
                "gpu.power_watts",
                Box::new(|e| {
                    if let Some(Payload::Gpu(g)) = &mut e.payload {
                        g.power_watts = -1.0
                    }
                }),
            ),
            (
                "tokens.model",
                Box::new(|e| {
                    e.payload = Some(Payload::Tokens(TokenUsage {
                        tenant: "t".into(),
                        ..Default::default()
                    }))
                }),
            ),
            (
                "tokens.latency",
                Box::new(|e| {
                    e.payload = Some(Payload::Tokens(TokenUsage {
                        model: "m".into(),
                        tenant: "t".into(),
                        latency: Some(prost_types::Duration {
                            seconds: -1,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }))
                }),
            ),
            (
                "metric.value",
                Box::new(|e| {
                    e.payload = Some(Payload::Metric(Metric {
                        name: "m".into(),
                        value: f64::NEG_INFINITY,
                        unit: String::new(),
                    }))
                }),
            ),
            (
                "metric.unit",
                Box::new(|e| {
                    e.payload = Some(Payload::Metric(Metric {
                        name: "m".into(),
                        value: 1.0,
                        unit: "u".repeat(33),
                    }))
                }),
            ),
        ];
        for (field, breaker) in cases {
            let mut e = gpu_event();
            breaker(&mut e);
            assert_eq!(field_of(&e).as_deref(), Some(field), "{e:?}");
        }
    }

    /// Up to the skew allowance in the future is fine.
    #[test]
    fn future_within_skew_passes() {
        let mut e = gpu_event();
        e.observed_at = Some(prost_types::Timestamp {
            seconds: 1_800_000_000 + 300,
            nanos: 0,
        });
        assert_eq!(field_of(&e), None);
    }

    /// The ids come back borrowed from the view, for the append.
    #[test]
    fn valid_events_give_their_ids() {
        let mut e = gpu_event();
        e.run_id = "run-1".into();
        let bytes = e.encode_to_vec();
        let view = EventRef::decode(&bytes).unwrap();
        let ids = validate(&view, &IngestConfig::default(), now()).unwrap();
        assert_eq!(
            ids,
            Ids {
                event_id: "ev-1",
                device_id: "gpu-node-01",
                run_id: "run-1"
            }
        );
    }

    /// Text that is not UTF-8 is a violation of its own field, wherever it
    /// is; the generated decoder would have refused the whole request.
    #[test]
    fn text_that_is_not_utf8_names_its_field() {
        let base = gpu_event().encode_to_vec();
        let bad = [0xff, 0xfe];
        // (field number, wire bytes of the field) appended to a valid event;
        // the last occurrence of a field wins.
        let len_field = |tag: u8, body: &[u8]| {
            let mut v = vec![tag, body.len() as u8];
            v.extend_from_slice(body);
            v
        };
        let label = {
            let mut entry = len_field(0x0a, &bad); // key
            entry.extend(len_field(0x12, b"v"));
            len_field(0x22, &entry)
        };
        let metric = {
            let mut m = len_field(0x0a, &bad); // name
            m.extend([0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]); // value 1.0
            len_field(0x62, &m)
        };
        let cases = [
            ("event_id", len_field(0x0a, &bad)),
            ("device_id", len_field(0x12, &bad)),
            ("run_id", len_field(0x2a, &bad)),
            ("labels[\"\u{fffd}\u{fffd}\"]", label),
            ("metric.name", metric),
        ];
        for (field, extra) in cases {
            let mut bytes = base.clone();
            bytes.extend_from_slice(&extra);
            assert_eq!(field_of_bytes(bytes).as_deref(), Some(field));
        }
    }

    /// Validation on random events (what `cargo fuzz` would explore, as
    /// property tests on stable Rust; `PROPTEST_CASES` raises the count):
    /// any event, and any bytes that decode as one, is accepted or refused
    /// naming one of the event's fields, never a panic; an accepted one
    /// answers the ids it was sent with.
    mod properties {
        use proptest::prelude::*;
        use testbed_proto::raw::EventRef;

        use super::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                "[a-z0-9-]{1,12}",
                any::<String>(),
                "\\PC{0,300}",
            ]
        }

        fn float() -> impl Strategy<Value = f64> {
            prop_oneof![
                any::<f64>(),
                -2.0..2.0f64,
                Just(f64::NAN),
                Just(f64::INFINITY)
            ]
        }

        fn payload() -> impl Strategy<Value = Option<Payload>> {
            let gpu = (
                any::<u32>(),
                float(),
                any::<u64>(),
                any::<u64>(),
                float(),
                float(),
            )
                .prop_map(
                    |(gpu_index, utilization, used, total, temperature_celsius, power_watts)| {
                        Payload::Gpu(GpuSample {
                            gpu_index,
                            utilization,
                            memory_used_bytes: used,
                            memory_total_bytes: total,
                            temperature_celsius,
                            power_watts,
                        })
                    },
                );
            let tokens = (
                text(),
                text(),
                any::<u64>(),
                any::<u64>(),
                any::<i64>(),
                any::<i32>(),
            )
                .prop_map(|(model, tenant, prompt, completion, secs, nanos)| {
                    Payload::Tokens(TokenUsage {
                        model,
                        tenant,
                        prompt_tokens: prompt,
                        completion_tokens: completion,
                        latency: Some(prost_types::Duration {
                            seconds: secs,
                            nanos,
                        }),
                    })
                });
            let metric = (text(), float(), text())
                .prop_map(|(name, value, unit)| Payload::Metric(Metric { name, value, unit }));
            proptest::option::weighted(0.95, prop_oneof![gpu, tokens, metric])
        }

        fn event() -> impl Strategy<Value = Event> {
            (
                (text(), text(), text()),
                proptest::option::weighted(
                    0.9,
                    prop_oneof![
                        (any::<i64>(), any::<i32>()),
                        (1_700_000_000..1_900_000_000i64, 0..1_000_000_000i32)
                    ],
                ),
                proptest::collection::hash_map(text(), text(), 0..40),
                payload(),
            )
                .prop_map(|((event_id, device_id, run_id), at, labels, payload)| {
                    Event {
                        event_id,
                        device_id,
                        observed_at: at
                            .map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
                        labels,
                        run_id,
                        payload,
                    }
                })
        }

        /// The fields a violation may name: the event's own.
        const FIELDS: [&str; 8] = [
            "event_id",
            "device_id",
            "run_id",
            "observed_at",
            "labels",
            "gpu",
            "tokens",
            "metric",
        ];

        fn check(bytes: &[u8], sent: Option<&Event>) -> Result<(), TestCaseError> {
            let Ok(view) = EventRef::decode(bytes) else {
                return Ok(());
            };
            match validate(&view, &IngestConfig::default(), now()) {
                Ok(ids) => {
                    if let Some(event) = sent {
                        prop_assert_eq!(ids.event_id, event.event_id.as_str());
                        prop_assert_eq!(ids.device_id, event.device_id.as_str());
                        prop_assert_eq!(ids.run_id, event.run_id.as_str());
                    }
                }
                Err(v) => {
                    prop_assert!(
                        FIELDS.iter().any(|f| v.field == *f
                            || v.field.starts_with(&format!("{f}."))
                            || v.field.starts_with(&format!("{f}["))),
                        "a violation names {:?}: {}",
                        v.field,
                        v.reason
                    );
                    prop_assert!(!v.reason.is_empty());
                }
            }
            Ok(())
        }

        proptest! {
            /// Any event is accepted with its ids or refused naming its field.
            #[test]
            fn any_event_is_accepted_or_refused_by_field(event in event()) {
                check(&event.encode_to_vec(), Some(&event))?;
            }

            /// Any bytes that read as an event are too.
            #[test]
            fn any_bytes_are_accepted_or_refused_by_field(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                check(&bytes, None)?;
            }
        }
    }
}
