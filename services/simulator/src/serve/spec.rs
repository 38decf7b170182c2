//! Requests of `testbed.v1.SimulatorService` checked and turned into what
//! the runner follows: every field named by its proto path in errors,
//! every default of the contract filled in.

use std::time::Duration;

use testbed_proto::v1 as pb;

// The defaults of `RunSpec.devices` and `RunSpec.batch_size` when 0 are
// the CLI's, written once in `load`.
use crate::load::fleet::Mix;
use crate::load::scenario::{Phase, Scenario};
use crate::load::{DEFAULT_BATCH_SIZE, DEFAULT_DEVICES};
use crate::serve::config::Limits;
use crate::serve::error::ApiError;
use crate::thresholds::Threshold;

/// The length of a load that runs "until stopped": a century, so that
/// instants and sums built on it cannot overflow.
pub const UNTIL_STOPPED: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Bounds and default of `WatchRunRequest.interval`, from the contract.
const WATCH_INTERVAL: (Duration, Duration, Duration) = (
    Duration::from_millis(100),
    Duration::from_secs(60),
    Duration::from_secs(1),
);
/// Longest run id, from the contract.
const MAX_RUN_ID: usize = 128;

/// The shape of a run's load.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// A constant rate, for a while or until stopped.
    Rate {
        /// Events/s.
        rate: f64,
        /// How long; `None` = until stopped.
        duration: Option<Duration>,
    },
    /// Phases.
    Scenario(Scenario),
}

impl Load {
    /// The scenario the runner follows.
    pub fn scenario(&self) -> Scenario {
        match self {
            Load::Rate { rate, duration } => {
                Scenario::steady(*rate, duration.unwrap_or(UNTIL_STOPPED))
            }
            Load::Scenario(s) => s.clone(),
        }
    }
}

/// A checked `StartRunRequest.spec`.
#[derive(Debug, Clone)]
pub struct StartSpec {
    /// The spec with the contract's defaults filled in (`run_id` and
    /// `target` are filled by the server).
    pub spec: pb::RunSpec,
    /// The load.
    pub load: Load,
    /// The payload mix.
    pub mix: Mix,
    /// The run's thresholds, checked.
    pub thresholds: Vec<Threshold>,
}

/// A checked `UpdateRunRequest.change`.
#[derive(Debug, Clone)]
pub enum Change {
    /// Switch to this constant rate.
    Rate(f64),
    /// Switch to this scenario, and its proto form for `Run.spec`.
    Scenario(Scenario, pb::Scenario),
}

/// A run id of the contract's form: 1..128 characters of `[A-Za-z0-9._:-]`.
pub fn run_id(id: &str, field: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    if id.len() > MAX_RUN_ID
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
    {
        return Err(ApiError::invalid(
            field,
            "must be 1..128 characters of [A-Za-z0-9._:-]",
        ));
    }
    Ok(())
}

/// A rate that must be greater than 0 and at most `--max-rate`.
fn positive_rate(value: f64, field: &str, limits: &Limits) -> Result<f64, ApiError> {
    if !(value.is_finite() && value > 0.0) {
        return Err(ApiError::invalid(
            field,
            format!("must be a number greater than 0 events/s, got {value}"),
        ));
    }
    at_most_max(value, field, limits)
}

/// A phase rate: not negative, at most `--max-rate`.
fn phase_rate(value: f64, field: &str, limits: &Limits) -> Result<f64, ApiError> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(ApiError::invalid(
            field,
            format!("must be a number of events/s, 0 or more, got {value}"),
        ));
    }
    at_most_max(value, field, limits)
}

fn at_most_max(value: f64, field: &str, limits: &Limits) -> Result<f64, ApiError> {
    if value > limits.max_rate {
        return Err(ApiError::invalid(
            field,
            format!(
                "{value} events/s is above this server's limit of {} (--max-rate)",
                limits.max_rate
            ),
        ));
    }
    Ok(value)
}

/// A run length at most `--max-run-duration`.
fn within_max_duration(total: Duration, field: &str, limits: &Limits) -> Result<(), ApiError> {
    if total > limits.max_run_duration {
        return Err(ApiError::invalid(
            field,
            format!(
                "{} is longer than this server's limit of {} (--max-run-duration)",
                humantime::format_duration(total),
                humantime::format_duration(limits.max_run_duration)
            ),
        ));
    }
    Ok(())
}

/// A duration of the request; `None` when unset.
fn duration(
    value: Option<&prost_types::Duration>,
    field: &str,
) -> Result<Option<Duration>, ApiError> {
    value
        .map(|d| {
            Duration::try_from(*d)
                .ok()
                .filter(|d| *d <= UNTIL_STOPPED)
                .ok_or_else(|| ApiError::invalid(field, "must be between 0 and 100 years"))
        })
        .transpose()
}

/// A required phase length, greater than zero.
fn phase_length(value: Option<&prost_types::Duration>, field: &str) -> Result<Duration, ApiError> {
    match duration(value, field)? {
        None => Err(ApiError::invalid(field, "is required")),
        Some(d) if d.is_zero() => Err(ApiError::invalid(field, "must be greater than zero")),
        Some(d) => Ok(d),
    }
}

/// Checks a scenario; `prefix` is its field path (`spec.scenario`).
pub fn scenario(s: &pb::Scenario, prefix: &str, limits: &Limits) -> Result<Scenario, ApiError> {
    use pb::phase::Kind;
    if s.phases.is_empty() {
        return Err(ApiError::invalid(
            format!("{prefix}.phases"),
            "needs at least one phase",
        ));
    }
    let mut phases = Vec::with_capacity(s.phases.len());
    // The base rate bursts multiply: the rate of the last ramp or hold.
    let mut base = 0.0;
    let mut total = Duration::ZERO;
    for (i, phase) in s.phases.iter().enumerate() {
        let at = format!("{prefix}.phases[{i}]");
        let phase = match &phase.kind {
            None => {
                return Err(ApiError::invalid(
                    at,
                    "needs one of ramp, hold, burst, spike, pause",
                ));
            }
            Some(Kind::Ramp(r)) => {
                let to = phase_rate(r.to_rate, &format!("{at}.ramp.to_rate"), limits)?;
                let phase = Phase::Ramp {
                    from: phase_rate(r.from_rate, &format!("{at}.ramp.from_rate"), limits)?,
                    to,
                    duration: phase_length(r.duration.as_ref(), &format!("{at}.ramp.duration"))?,
                };
                base = to;
                phase
            }
            Some(Kind::Hold(h)) => {
                let rate = phase_rate(h.rate, &format!("{at}.hold.rate"), limits)?;
                base = rate;
                Phase::Hold {
                    rate,
                    duration: phase_length(h.duration.as_ref(), &format!("{at}.hold.duration"))?,
                }
            }
            Some(Kind::Burst(b)) => {
                let field = format!("{at}.burst.multiplier");
                if !(b.multiplier.is_finite() && b.multiplier > 0.0) {
                    return Err(ApiError::invalid(
                        field,
                        format!("must be a number greater than 0, got {}", b.multiplier),
                    ));
                }
                at_most_max(base * b.multiplier, &field, limits)?;
                Phase::Burst {
                    multiplier: b.multiplier,
                    duration: phase_length(b.duration.as_ref(), &format!("{at}.burst.duration"))?,
                }
            }
            Some(Kind::Spike(p)) => Phase::Spike {
                rate: phase_rate(p.rate, &format!("{at}.spike.rate"), limits)?,
                duration: phase_length(p.duration.as_ref(), &format!("{at}.spike.duration"))?,
            },
            Some(Kind::Pause(p)) => Phase::Pause {
                duration: phase_length(p.duration.as_ref(), &format!("{at}.pause.duration"))?,
            },
        };
        total = total
            .checked_add(phase.duration())
            .filter(|t| *t <= UNTIL_STOPPED)
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("{prefix}.phases"),
                    "last more than 100 years in all",
                )
            })?;
        phases.push(phase);
    }
    within_max_duration(total, &format!("{prefix}.phases"), limits)?;
    Ok(Scenario {
        name: s.name.clone(),
        phases,
    })
}

fn mix(m: Option<&pb::PayloadMix>) -> Result<Mix, ApiError> {
    let Some(m) = m else {
        return Ok(Mix {
            gpu: 1.0,
            tokens: 1.0,
            metric: 1.0,
        });
    };
    for (name, w) in [("gpu", m.gpu), ("tokens", m.tokens), ("metric", m.metric)] {
        if !(w.is_finite() && w >= 0.0) {
            return Err(ApiError::invalid(
                format!("spec.mix.{name}"),
                format!("must be a weight, 0 or more, got {w}"),
            ));
        }
    }
    if m.gpu + m.tokens + m.metric <= 0.0 {
        // The contract: all zero means equal weights.
        return mix(None);
    }
    Ok(Mix {
        gpu: m.gpu,
        tokens: m.tokens,
        metric: m.metric,
    })
}

/// Checks a `StartRunRequest.spec` and fills in the contract's defaults
/// (devices, batch size, mix, a random seed for 0).
pub fn start(spec: Option<pb::RunSpec>, limits: &Limits) -> Result<StartSpec, ApiError> {
    use pb::run_spec::Load as PbLoad;
    let mut spec = spec.ok_or_else(|| ApiError::invalid("spec", "is required"))?;
    if !spec.run_id.is_empty() {
        run_id(&spec.run_id, "spec.run_id")?;
    }
    let load = match &spec.load {
        None => {
            return Err(ApiError::invalid(
                "spec.load",
                "is required: set rate or scenario",
            ));
        }
        Some(PbLoad::Rate(r)) => {
            let rate = positive_rate(r.events_per_second, "spec.rate.events_per_second", limits)?;
            // Unset or zero: until stopped (at most --max-run-duration).
            let duration =
                duration(r.duration.as_ref(), "spec.rate.duration")?.filter(|d| !d.is_zero());
            if let Some(d) = duration {
                within_max_duration(d, "spec.rate.duration", limits)?;
            }
            Load::Rate { rate, duration }
        }
        Some(PbLoad::Scenario(s)) => Load::Scenario(scenario(s, "spec.scenario", limits)?),
    };
    if spec.devices == 0 {
        spec.devices = DEFAULT_DEVICES;
    }
    if spec.devices > limits.max_devices {
        return Err(ApiError::invalid(
            "spec.devices",
            format!("must be at most {} (--max-devices)", limits.max_devices),
        ));
    }
    if spec.batch_size == 0 {
        spec.batch_size = DEFAULT_BATCH_SIZE;
    }
    if spec.batch_size > limits.max_batch_size {
        return Err(ApiError::invalid(
            "spec.batch_size",
            format!(
                "must be at most {} (--max-batch-size)",
                limits.max_batch_size
            ),
        ));
    }
    let mix = mix(spec.mix.as_ref())?;
    spec.mix = Some(pb::PayloadMix {
        gpu: mix.gpu,
        tokens: mix.tokens,
        metric: mix.metric,
    });
    while spec.seed == 0 {
        spec.seed = rand::random();
    }
    let thresholds = thresholds(&spec.thresholds)?;
    Ok(StartSpec {
        spec,
        load,
        mix,
        thresholds,
    })
}

/// `spec.thresholds`, each parsed; the metrics only `--verify` measures
/// are refused, as a served run does not verify.
fn thresholds(given: &[String]) -> Result<Vec<Threshold>, ApiError> {
    given
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let field = format!("spec.thresholds[{i}]");
            let threshold: Threshold =
                text.parse()
                    .map_err(|e: crate::thresholds::expr::ParseError| {
                        ApiError::invalid(&field, e.to_string())
                    })?;
            if threshold.metric.needs_verify() {
                return Err(ApiError::invalid(
                    &field,
                    format!(
                        "{:?} needs verification, which only `testbed sim --verify` does",
                        threshold.expression
                    ),
                ));
            }
            Ok(threshold)
        })
        .collect()
}

/// Checks an `UpdateRunRequest.change`.
pub fn change(
    change: Option<&pb::update_run_request::Change>,
    limits: &Limits,
) -> Result<Change, ApiError> {
    use pb::update_run_request::Change as PbChange;
    match change {
        None => Err(ApiError::invalid(
            "change",
            "is required: set events_per_second or scenario",
        )),
        Some(PbChange::EventsPerSecond(rate)) => Ok(Change::Rate(positive_rate(
            *rate,
            "events_per_second",
            limits,
        )?)),
        Some(PbChange::Scenario(s)) => Ok(Change::Scenario(
            scenario(s, "scenario", limits)?,
            s.clone(),
        )),
    }
}

/// `WatchRunRequest.interval`: 1s when unset, 100ms..60s.
pub fn watch_interval(value: Option<&prost_types::Duration>) -> Result<Duration, ApiError> {
    match duration(value, "interval")? {
        None => Ok(WATCH_INTERVAL.2),
        Some(d) if (WATCH_INTERVAL.0..=WATCH_INTERVAL.1).contains(&d) => Ok(d),
        Some(_) => Err(ApiError::invalid(
            "interval",
            "must be between 100ms and 60s",
        )),
    }
}

#[cfg(test)]
mod tests {
    use pb::phase::Kind;
    use pb::run_spec::Load as PbLoad;

    use super::*;

    const LIMITS: Limits = Limits {
        max_rate: 1000.0,
        max_devices: 500,
        max_batch_size: 1000,
        max_run_duration: Duration::from_secs(3600),
        max_connections: 64,
        max_total_rate: 2000.0,
    };

    fn secs(s: i64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: s,
            nanos: 0,
        })
    }

    fn rate_spec(rate: f64, duration: Option<prost_types::Duration>) -> pb::RunSpec {
        pb::RunSpec {
            load: Some(PbLoad::Rate(pb::RateLoad {
                events_per_second: rate,
                duration,
            })),
            ..Default::default()
        }
    }

    fn field_of(err: ApiError) -> String {
        match err {
            ApiError::InvalidArgument { field, .. } => field,
            other => panic!("not INVALID_ARGUMENT: {other}"),
        }
    }

    /// Zeros become the contract's defaults; unset or zero duration runs
    /// until stopped.
    #[test]
    fn defaults_are_filled() {
        let s = start(Some(rate_spec(50.0, None)), &LIMITS).unwrap();
        assert_eq!((s.spec.devices, s.spec.batch_size), (100, 100));
        assert_ne!(s.spec.seed, 0);
        assert_eq!(
            s.mix,
            Mix {
                gpu: 1.0,
                tokens: 1.0,
                metric: 1.0
            }
        );
        assert_eq!(
            s.load,
            Load::Rate {
                rate: 50.0,
                duration: None
            }
        );
        assert_eq!(s.load.scenario().duration(), UNTIL_STOPPED);
        let s = start(Some(rate_spec(50.0, secs(0))), &LIMITS).unwrap();
        assert_eq!(
            s.load,
            Load::Rate {
                rate: 50.0,
                duration: None
            }
        );
        let s = start(Some(rate_spec(50.0, secs(2))), &LIMITS).unwrap();
        assert_eq!(
            s.load.scenario(),
            Scenario::steady(50.0, Duration::from_secs(2))
        );
    }

    /// Thresholds are parsed in order; a malformed one, or one only
    /// `--verify` measures, is refused naming `spec.thresholds[i]`.
    #[test]
    fn thresholds_are_checked() {
        let mut spec = rate_spec(50.0, secs(2));
        spec.thresholds = vec!["ack_p99<10ms".into(), "errors<0.1%:abort".into()];
        let s = start(Some(spec.clone()), &LIMITS).unwrap();
        let given: Vec<(&str, bool)> = s
            .thresholds
            .iter()
            .map(|t| (t.expression.as_str(), t.abort))
            .collect();
        assert_eq!(
            given,
            [("ack_p99<10ms", false), ("errors<0.1%:abort", true)]
        );
        for bad in ["ack_p99 < ten", "e2e_p99<1s", "verify"] {
            spec.thresholds = vec!["ack_p99<10ms".into(), bad.into()];
            let err = start(Some(spec.clone()), &LIMITS).unwrap_err();
            assert_eq!(field_of(err), "spec.thresholds[1]", "{bad}");
        }
    }

    /// Bad rates, lengths, ids and limits name the field.
    #[test]
    fn bad_specs_name_the_field() {
        for rate in [-1.0, 0.0, f64::NAN, f64::INFINITY, 1001.0] {
            let err = start(Some(rate_spec(rate, None)), &LIMITS).unwrap_err();
            assert_eq!(field_of(err), "spec.rate.events_per_second", "{rate}");
        }
        let negative = Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        });
        assert_eq!(
            field_of(start(Some(rate_spec(5.0, negative)), &LIMITS).unwrap_err()),
            "spec.rate.duration"
        );
        assert_eq!(field_of(start(None, &LIMITS).unwrap_err()), "spec");
        assert_eq!(
            field_of(start(Some(pb::RunSpec::default()), &LIMITS).unwrap_err()),
            "spec.load"
        );
        let mut s = rate_spec(5.0, None);
        s.run_id = "a b".into();
        assert_eq!(
            field_of(start(Some(s), &LIMITS).unwrap_err()),
            "spec.run_id"
        );
        let mut s = rate_spec(5.0, None);
        s.devices = 501;
        assert_eq!(
            field_of(start(Some(s), &LIMITS).unwrap_err()),
            "spec.devices"
        );
        let mut s = rate_spec(5.0, None);
        s.mix = Some(pb::PayloadMix {
            gpu: -1.0,
            ..Default::default()
        });
        assert_eq!(
            field_of(start(Some(s), &LIMITS).unwrap_err()),
            "spec.mix.gpu"
        );
        let err = start(Some(rate_spec(5.0, secs(3601))), &LIMITS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid spec.rate.duration: 1h 1s is longer than this server's limit of 1h (--max-run-duration)"
        );
        assert!(run_id(&"x".repeat(129), "run_id").is_err());
        assert!(run_id("run-1:a_b.c", "run_id").is_ok());
    }

    /// Scenarios convert phase by phase; zero-length phases, missing kinds
    /// and bursts above the limit are refused by path.
    #[test]
    fn scenarios() {
        let phase = |kind| pb::Phase { kind: Some(kind) };
        let s = pb::Scenario {
            name: "s".into(),
            phases: vec![
                phase(Kind::Ramp(pb::RampPhase {
                    from_rate: 0.0,
                    to_rate: 400.0,
                    duration: secs(2),
                })),
                phase(Kind::Burst(pb::BurstPhase {
                    multiplier: 2.0,
                    duration: secs(1),
                })),
                phase(Kind::Spike(pb::SpikePhase {
                    rate: 900.0,
                    duration: secs(1),
                })),
                phase(Kind::Pause(pb::PausePhase { duration: secs(1) })),
                phase(Kind::Hold(pb::HoldPhase {
                    rate: 10.0,
                    duration: secs(1),
                })),
            ],
        };
        let parsed = scenario(&s, "spec.scenario", &LIMITS).unwrap();
        assert_eq!(parsed.duration(), Duration::from_secs(6));
        assert_eq!(
            parsed.rate_at(Duration::from_millis(2500)),
            Some((800.0, 1))
        );

        let mut zero = s.clone();
        zero.phases[4] = phase(Kind::Hold(pb::HoldPhase {
            rate: 10.0,
            duration: secs(0),
        }));
        assert_eq!(
            field_of(scenario(&zero, "spec.scenario", &LIMITS).unwrap_err()),
            "spec.scenario.phases[4].hold.duration"
        );
        let mut hot = s.clone();
        hot.phases[1] = phase(Kind::Burst(pb::BurstPhase {
            multiplier: 3.0,
            duration: secs(1),
        }));
        assert_eq!(
            field_of(scenario(&hot, "scenario", &LIMITS).unwrap_err()),
            "scenario.phases[1].burst.multiplier"
        );
        let mut empty = s.clone();
        empty.phases[2] = pb::Phase { kind: None };
        assert_eq!(
            field_of(scenario(&empty, "scenario", &LIMITS).unwrap_err()),
            "scenario.phases[2]"
        );
        assert_eq!(
            field_of(scenario(&pb::Scenario::default(), "scenario", &LIMITS).unwrap_err()),
            "scenario.phases"
        );
    }

    /// UpdateRun changes and watch intervals are checked by field.
    #[test]
    fn changes_and_intervals() {
        use pb::update_run_request::Change as PbChange;
        assert!(matches!(
            change(Some(&PbChange::EventsPerSecond(5.0)), &LIMITS),
            Ok(Change::Rate(5.0))
        ));
        assert_eq!(
            field_of(change(Some(&PbChange::EventsPerSecond(-1.0)), &LIMITS).unwrap_err()),
            "events_per_second"
        );
        assert_eq!(field_of(change(None, &LIMITS).unwrap_err()), "change");
        assert_eq!(watch_interval(None).unwrap(), Duration::from_secs(1));
        assert_eq!(
            field_of(
                watch_interval(Some(&prost_types::Duration {
                    seconds: 0,
                    nanos: 1_000_000
                }))
                .unwrap_err()
            ),
            "interval"
        );
        assert_eq!(
            field_of(watch_interval(secs(61).as_ref()).unwrap_err()),
            "interval"
        );
    }
}
