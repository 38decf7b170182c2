//! Scenarios: phases of load over time, from a TOML file or `--rate` and
//! `--duration`.
//!
//! ```toml
//! name = "ramp-to-saturation"
//! [[phase]]
//! kind = "ramp"      # from -> to events/s, linearly
//! from = 100
//! to = 20000
//! duration = "2m"
//! [[phase]]
//! kind = "hold"      # a steady rate
//! rate = 20000
//! duration = "1m"
//! [[phase]]
//! kind = "burst"     # the base rate (last ramp/hold) times a multiplier
//! multiplier = 3.0
//! duration = "20s"
//! [[phase]]
//! kind = "spike"     # an absolute rate, then back to the base rate
//! rate = 50000
//! duration = "5s"
//! [[phase]]
//! kind = "pause"     # no load
//! duration = "10s"
//! ```
//!
//! A file may also carry the run's pass/fail thresholds (checked by
//! [`crate::thresholds`], which this module does not know: it hands them
//! on as text, with their lines):
//!
//! ```toml
//! thresholds = ["ack_p99<10ms", "errors<0.1%", "achieved>=99%:abort"]
//! ```

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or a field is wrong (the message has the line,
    /// column and field).
    #[error("invalid scenario {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What and where.
        message: String,
    },
}

/// One phase of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Phase {
    /// Linear change of rate from `from` to `to` events/s.
    Ramp {
        /// Start rate, events/s.
        from: f64,
        /// End rate, events/s.
        to: f64,
        /// Length.
        #[serde(with = "humane")]
        duration: Duration,
    },
    /// A steady rate.
    Hold {
        /// Events/s.
        rate: f64,
        /// Length.
        #[serde(with = "humane")]
        duration: Duration,
    },
    /// The base rate times `multiplier`.
    Burst {
        /// Factor on the base rate.
        multiplier: f64,
        /// Length.
        #[serde(with = "humane")]
        duration: Duration,
    },
    /// An absolute rate that does not change the base rate.
    Spike {
        /// Events/s.
        rate: f64,
        /// Length.
        #[serde(with = "humane")]
        duration: Duration,
    },
    /// No load.
    Pause {
        /// Length.
        #[serde(with = "humane")]
        duration: Duration,
    },
}

impl Phase {
    /// The phase's length.
    pub fn duration(&self) -> Duration {
        match self {
            Phase::Ramp { duration, .. }
            | Phase::Hold { duration, .. }
            | Phase::Burst { duration, .. }
            | Phase::Spike { duration, .. }
            | Phase::Pause { duration } => *duration,
        }
    }

    /// A short name for progress lines and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Ramp { .. } => "ramp",
            Phase::Hold { .. } => "hold",
            Phase::Burst { .. } => "burst",
            Phase::Spike { .. } => "spike",
            Phase::Pause { .. } => "pause",
        }
    }
}

/// Durations as humane text (`1s 500ms`), in reports.
mod humane {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// A named sequence of phases, as a report records it (scenario files
/// are read through their own checked form, [`Scenario::load`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Scenario {
    /// Name, for reports.
    pub name: String,
    /// The phases, in order.
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
}

/// The file as written: every field spanned, so errors name the line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    name: String,
    #[serde(default)]
    phase: Vec<toml::Spanned<PhaseSpec>>,
    #[serde(default)]
    thresholds: Vec<toml::Spanned<String>>,
}

/// A scenario file: its scenario and its thresholds, as text with the
/// 1-based line of each, for errors.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioFile {
    /// The load.
    pub scenario: Scenario,
    /// `thresholds = [...]`: each expression and its line.
    pub thresholds: Vec<(String, usize)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseSpec {
    kind: toml::Spanned<String>,
    from: Option<toml::Spanned<f64>>,
    to: Option<toml::Spanned<f64>>,
    rate: Option<toml::Spanned<f64>>,
    multiplier: Option<toml::Spanned<f64>>,
    duration: Option<toml::Spanned<String>>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Scenario {
    /// One `hold` phase: the `--rate`/`--duration` shorthand.
    pub fn steady(rate: f64, duration: Duration) -> Self {
        Self {
            name: "steady".to_owned(),
            phases: vec![Phase::Hold { rate, duration }],
        }
    }

    /// Parses TOML text; `path` names the source in errors, which carry
    /// the line and the field.
    pub fn parse(text: &str, path: &str) -> Result<Self, ScenarioError> {
        Self::parse_file(text, path).map(|file| file.scenario)
    }

    /// Parses TOML text with its thresholds.
    pub fn parse_file(text: &str, path: &str) -> Result<ScenarioFile, ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            path: path.to_owned(),
            message,
        };
        let file: File =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim().to_owned()))?;
        if file.phase.is_empty() {
            return Err(invalid("needs at least one [[phase]]".to_owned()));
        }
        let mut phases = Vec::with_capacity(file.phase.len());
        for (i, spanned) in file.phase.iter().enumerate() {
            let spec = spanned.get_ref();
            let at = |span: std::ops::Range<usize>, field: &str, why: &str| {
                invalid(format!(
                    "line {}: phase[{i}].{field} {why}",
                    line_of(text, span.start)
                ))
            };
            let rate =
                |v: &Option<toml::Spanned<f64>>, field: &str| -> Result<f64, ScenarioError> {
                    let v = v
                        .as_ref()
                        .ok_or_else(|| at(spanned.span(), field, "is required"))?;
                    let r = *v.get_ref();
                    if r.is_finite() && (0.0..=10_000_000.0).contains(&r) {
                        Ok(r)
                    } else {
                        Err(at(v.span(), field, "must be 0..10000000 events/s"))
                    }
                };
            let duration = {
                let d = spec
                    .duration
                    .as_ref()
                    .ok_or_else(|| at(spanned.span(), "duration", "is required"))?;
                let parsed = humantime::parse_duration(d.get_ref())
                    .map_err(|e| at(d.span(), "duration", &format!("{:?}: {e}", d.get_ref())))?;
                if parsed.is_zero() {
                    return Err(at(d.span(), "duration", "must be positive"));
                }
                parsed
            };
            let phase = match spec.kind.get_ref().as_str() {
                "ramp" => Phase::Ramp {
                    from: rate(&spec.from, "from")?,
                    to: rate(&spec.to, "to")?,
                    duration,
                },
                "hold" => Phase::Hold {
                    rate: rate(&spec.rate, "rate")?,
                    duration,
                },
                "spike" => Phase::Spike {
                    rate: rate(&spec.rate, "rate")?,
                    duration,
                },
                "burst" => {
                    let m = spec
                        .multiplier
                        .as_ref()
                        .ok_or_else(|| at(spanned.span(), "multiplier", "is required"))?;
                    if !(m.get_ref().is_finite() && *m.get_ref() >= 0.0) {
                        return Err(at(m.span(), "multiplier", "must be a non-negative number"));
                    }
                    Phase::Burst {
                        multiplier: *m.get_ref(),
                        duration,
                    }
                }
                "pause" => Phase::Pause { duration },
                other => {
                    return Err(at(
                        spec.kind.span(),
                        "kind",
                        &format!("{other:?} is not one of ramp, hold, burst, spike, pause"),
                    ));
                }
            };
            phases.push(phase);
        }
        Ok(ScenarioFile {
            scenario: Self {
                name: file.name,
                phases,
            },
            thresholds: file
                .thresholds
                .into_iter()
                .map(|t| (t.get_ref().clone(), line_of(text, t.span().start)))
                .collect(),
        })
    }

    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        Self::load_file(path).map(|file| file.scenario)
    }

    /// Reads and parses a scenario file with its thresholds.
    pub fn load_file(path: &Path) -> Result<ScenarioFile, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse_file(&text, &shown)
    }

    /// Total length.
    pub fn duration(&self) -> Duration {
        self.phases.iter().map(Phase::duration).sum()
    }

    /// The target rate (events/s) at `t` since the start, and the index of
    /// the phase in force; `None` after the end.
    pub fn rate_at(&self, t: Duration) -> Option<(f64, usize)> {
        let mut start = Duration::ZERO;
        let mut base = 0.0;
        for (i, phase) in self.phases.iter().enumerate() {
            let end = start + phase.duration();
            if t < end {
                let into = (t - start).as_secs_f64() / phase.duration().as_secs_f64();
                let rate = match phase {
                    Phase::Ramp { from, to, .. } => from + (to - from) * into,
                    Phase::Hold { rate, .. } | Phase::Spike { rate, .. } => *rate,
                    Phase::Burst { multiplier, .. } => base * multiplier,
                    Phase::Pause { .. } => 0.0,
                };
                return Some((rate, i));
            }
            match phase {
                Phase::Ramp { to, .. } => base = *to,
                Phase::Hold { rate, .. } => base = *rate,
                _ => {}
            }
            start = end;
        }
        None
    }

    /// The highest rate (events/s) the schedule asks for at any time.
    pub fn peak_rate(&self) -> f64 {
        let mut base: f64 = 0.0;
        let mut peak: f64 = 0.0;
        for phase in &self.phases {
            let rate = match phase {
                Phase::Ramp { from, to, .. } => from.max(*to),
                Phase::Hold { rate, .. } | Phase::Spike { rate, .. } => *rate,
                Phase::Burst { multiplier, .. } => base * multiplier,
                Phase::Pause { .. } => 0.0,
            };
            match phase {
                Phase::Ramp { to, .. } => base = *to,
                Phase::Hold { rate, .. } => base = *rate,
                _ => {}
            }
            peak = peak.max(rate);
        }
        peak
    }

    /// Events the schedule asks for in total (the integral of the rate).
    /// The scenario's first `length` (the whole when longer): what a run
    /// stopped early had planned so far. A cut ramp ends at the rate it
    /// had reached.
    pub fn truncated(&self, length: Duration) -> Self {
        let mut phases = Vec::new();
        let mut left = length;
        for phase in &self.phases {
            if left.is_zero() {
                break;
            }
            let d = phase.duration();
            if d <= left {
                phases.push(phase.clone());
                left -= d;
                continue;
            }
            let frac = left.as_secs_f64() / d.as_secs_f64();
            phases.push(match phase.clone() {
                Phase::Ramp { from, to, .. } => Phase::Ramp {
                    from,
                    to: from + (to - from) * frac,
                    duration: left,
                },
                Phase::Hold { rate, .. } => Phase::Hold {
                    rate,
                    duration: left,
                },
                Phase::Burst { multiplier, .. } => Phase::Burst {
                    multiplier,
                    duration: left,
                },
                Phase::Spike { rate, .. } => Phase::Spike {
                    rate,
                    duration: left,
                },
                Phase::Pause { .. } => Phase::Pause { duration: left },
            });
            break;
        }
        Self {
            name: self.name.clone(),
            phases,
        }
    }

    /// Events the schedule plans over the whole scenario.
    pub fn planned_events(&self) -> f64 {
        let mut base = 0.0;
        let mut total = 0.0;
        for phase in &self.phases {
            let secs = phase.duration().as_secs_f64();
            total += match phase {
                Phase::Ramp { from, to, .. } => (from + to) / 2.0 * secs,
                Phase::Hold { rate, .. } | Phase::Spike { rate, .. } => rate * secs,
                Phase::Burst { multiplier, .. } => base * multiplier * secs,
                Phase::Pause { .. } => 0.0,
            };
            match phase {
                Phase::Ramp { to, .. } => base = *to,
                Phase::Hold { rate, .. } => base = *rate,
                _ => {}
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
name = "hpa"
[[phase]]
kind = "ramp"
from = 100
to = 300
duration = "10s"
[[phase]]
kind = "burst"
multiplier = 2
duration = "5s"
[[phase]]
kind = "spike"
rate = 1000
duration = "1s"
[[phase]]
kind = "pause"
duration = "2s"
"#;

    /// Every phase kind parses, and the rate function follows them.
    #[test]
    fn parses_and_follows_phases() {
        let s = Scenario::parse(FILE, "hpa.toml").unwrap();
        assert_eq!(s.name, "hpa");
        assert_eq!(s.duration(), Duration::from_secs(18));
        assert_eq!(s.rate_at(Duration::ZERO), Some((100.0, 0)));
        assert_eq!(s.rate_at(Duration::from_secs(5)), Some((200.0, 0)));
        assert_eq!(s.rate_at(Duration::from_secs(12)), Some((600.0, 1)));
        assert_eq!(s.rate_at(Duration::from_millis(15_500)), Some((1000.0, 2)));
        assert_eq!(s.rate_at(Duration::from_secs(17)), Some((0.0, 3)));
        assert_eq!(s.rate_at(Duration::from_secs(18)), None);
        assert_eq!(s.planned_events(), 2000.0 + 3000.0 + 1000.0);
    }

    /// A scenario cut short plans what it had reached.
    #[test]
    fn truncated_plans_what_it_reached() {
        let s = Scenario {
            name: "t".into(),
            phases: vec![
                Phase::Ramp {
                    from: 0.0,
                    to: 100.0,
                    duration: Duration::from_secs(10),
                },
                Phase::Hold {
                    rate: 100.0,
                    duration: Duration::from_secs(10),
                },
            ],
        };
        assert_eq!(s.truncated(Duration::from_secs(5)).planned_events(), 125.0);
        assert_eq!(
            s.truncated(Duration::from_secs(15)).planned_events(),
            1000.0
        );
        assert_eq!(s.truncated(Duration::from_secs(60)), s);
    }

    /// A file's thresholds come with their lines.
    #[test]
    fn thresholds_with_lines() {
        let file = Scenario::parse_file(
            "thresholds = [\n  \"ack_p99<10ms\",\n  \"errors<1%\",\n]\n[[phase]]\nkind = \"pause\"\nduration = \"1s\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(
            file.thresholds,
            [("ack_p99<10ms".to_owned(), 2), ("errors<1%".to_owned(), 3)]
        );
        assert_eq!(file.scenario.phases.len(), 1);
    }

    /// A bad file names the line and the field.
    #[test]
    fn errors_name_line_and_field() {
        let err = Scenario::parse(
            "[[phase]]\nkind = \"hold\"\nrate = 10\nduration = \"soon\"\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 4: phase[0].duration") && err.contains("soon"),
            "{err}"
        );
        let err = Scenario::parse(
            "[[phase]]\nkind = \"hold\"\nrat = 10\nduration = \"1s\"\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("rat") && err.contains("line"), "{err}");
        let err = Scenario::parse("[[phase]]\nkind = \"warp\"\nduration = \"1s\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2: phase[0].kind") && err.contains("warp"),
            "{err}"
        );
        let err = Scenario::parse(
            "[[phase]]\nkind = \"hold\"\nrate = -5\nduration = \"1s\"\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 3: phase[0].rate"), "{err}");
        let err = Scenario::parse("name = \"empty\"\nphase = []\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least one"), "{err}");
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    /// The example scenarios shipped under deploy/scenarios parse.
    #[test]
    fn shipped_scenarios_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/scenarios");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(scenario.planned_events() > 0.0, "{}", path.display());
            names.push(scenario.name);
        }
        names.sort();
        assert_eq!(names, ["hpa-burst", "ramp-to-saturation", "steady"]);
    }
}
