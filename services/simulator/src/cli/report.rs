//! The run's report: a human table, the testbed's JSON experiment record,
//! and ghz's JSON layout.
//!
//! The record also reads back ([`Report`] is `Deserialize`): the bench
//! harness reads the simulator's reports through these types. Fields a
//! report lacks (one written by another revision) read as their defaults.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::timeline::Sample;
use crate::cli::verify::Verification;
use crate::load::scenario::Scenario;
use crate::load::stats::{Figures, RunFigures};
use crate::thresholds::eval::Latencies;
use crate::thresholds::{Observed, Outcome, Threshold};

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Latency {
    fn of(f: &Figures) -> Self {
        Self {
            p50_ms: ms(f.quantile(0.5)),
            p90_ms: ms(f.quantile(0.9)),
            p99_ms: ms(f.quantile(0.99)),
            p999_ms: ms(f.quantile(0.999)),
            max_ms: f.latency.max() as f64 / 1000.0,
            mean_ms: f.latency.mean() / 1000.0,
        }
    }
}

/// Figures of one phase (or the whole run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Section {
    /// Phase kind, or "total".
    pub name: String,
    /// Planned length, seconds.
    pub duration_s: f64,
    /// Average target rate, events/s.
    pub target_rate: f64,
    /// Accepted events per second of the section.
    pub achieved_rate: f64,
    /// Events sent (first attempts).
    pub sent: u64,
    /// Events accepted.
    pub accepted: u64,
    /// Events rejected by validation.
    pub rejected: u64,
    /// Accepted events recognised as duplicates.
    pub duplicates: u64,
    /// Batches re-sent.
    pub retried_batches: u64,
    /// Events given up.
    pub failed: u64,
    /// Events sent and never answered (in flight or queued when the
    /// drain timeout ended).
    pub unanswered: u64,
    /// Batches re-sent, by why: a refusal's status code name
    /// (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`, ...), `PROTOCOL_ERROR`, or
    /// `STREAM_BROKEN`.
    pub resent_batches: std::collections::BTreeMap<String, u64>,
    /// OK answers that broke the contract (the batch was re-sent).
    pub protocol_errors: u64,
    /// Batch-ack latency from the intended send time.
    pub latency: Latency,
    /// Outcomes by status code.
    pub status_codes: std::collections::BTreeMap<String, u64>,
    /// Events sent per kind (gpu, tokens, metric; first attempts).
    pub sent_kinds: [u64; 3],
    /// Events acknowledged as accepted per kind.
    pub accepted_kinds: [u64; 3],
    /// The longest time between two acknowledgements that accepted
    /// events, seconds: how long publishing stopped at worst (a Redis
    /// failover, an ingest restart). At a steady rate it is otherwise about
    /// the time between batches.
    pub longest_gap_s: f64,
    /// When that gap ended, seconds from the run's start (0: no gap).
    pub longest_gap_ended_s: f64,
}

/// One point of the latency distribution (an HDR percentile plot).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Percentile {
    /// The percentile, 0..=100.
    pub percentile: f64,
    /// Batch-ack latency at it, ms.
    pub latency_ms: f64,
}

/// The percentiles of the distribution plot: each step a tenth of the
/// remaining tail, as HdrHistogram's own percentile plots.
const DISTRIBUTION: [f64; 14] = [
    0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 99.9999, 100.0,
];

fn distribution(f: &Figures) -> Vec<Percentile> {
    if f.latency.is_empty() {
        return Vec::new();
    }
    DISTRIBUTION
        .iter()
        .map(|&percentile| Percentile {
            percentile,
            latency_ms: ms(f.quantile(percentile / 100.0)),
        })
        .collect()
}

impl Section {
    fn of(
        name: &str,
        duration: Duration,
        planned: f64,
        f: &Figures,
        started: Option<std::time::Instant>,
    ) -> Self {
        let secs = duration.as_secs_f64().max(1e-9);
        let gap_ended = match (f.longest_gap_ended, started) {
            (Some(end), Some(start)) => end.saturating_duration_since(start).as_secs_f64(),
            _ => 0.0,
        };
        Self {
            name: name.to_owned(),
            duration_s: duration.as_secs_f64(),
            target_rate: planned / secs,
            achieved_rate: f.accepted as f64 / secs,
            sent: f.sent,
            accepted: f.accepted,
            rejected: f.rejected,
            duplicates: f.duplicates,
            retried_batches: f.retried,
            failed: f.failed,
            unanswered: f.unanswered(),
            resent_batches: f.resent.clone(),
            protocol_errors: f.protocol_errors,
            latency: Latency::of(f),
            status_codes: f.status_codes.clone(),
            sent_kinds: f.sent_kinds,
            accepted_kinds: f.accepted_kinds,
            longest_gap_s: f.longest_gap.as_secs_f64(),
            longest_gap_ended_s: gap_ended,
        }
    }
}

/// The experiment record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// Run id (the delivery ledger's key).
    pub run_id: String,
    /// The scenario as run.
    pub scenario: Scenario,
    /// RNG seed.
    pub seed: u64,
    /// Ingest target.
    pub target: String,
    /// Simulator version, revision and target.
    pub version: String,
    /// Architecture the simulator ran on.
    pub arch: String,
    /// Start, RFC 3339.
    pub start_time: String,
    /// End, RFC 3339.
    pub end_time: String,
    /// The whole run.
    pub total: Section,
    /// Per phase.
    pub phases: Vec<Section>,
    /// `--verify` outcome, if asked.
    pub verification: Option<Verification>,
    /// The run over time, one sample per `--sample-interval`.
    pub timeline: Vec<Sample>,
    /// The whole run's batch-ack latency distribution.
    pub distribution: Vec<Percentile>,
    /// The flags that shaped the load (devices, mix, connections,
    /// streams, batch size...), as given.
    pub settings: std::collections::BTreeMap<String, String>,
    /// Each threshold with the value it saw and whether it held.
    pub thresholds: Vec<Outcome>,
}

impl Report {
    /// Builds the record of a run.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        run_id: &str,
        scenario: &Scenario,
        seed: u64,
        target: &str,
        start: SystemTime,
        end: SystemTime,
        scheduled: Duration,
        figures: &RunFigures,
    ) -> Self {
        let phases = scenario
            .phases
            .iter()
            .zip(&figures.phases)
            .map(|(phase, f)| {
                let one = Scenario {
                    name: String::new(),
                    phases: vec![phase.clone()],
                };
                Section::of(
                    phase.name(),
                    phase.duration(),
                    one.planned_events(),
                    f,
                    figures.started,
                )
            })
            .collect();
        Self {
            run_id: run_id.to_owned(),
            scenario: scenario.clone(),
            seed,
            target: target.to_owned(),
            version: testbed_build_info::long_version(),
            arch: testbed_build_info::arch().to_owned(),
            start_time: humantime::format_rfc3339_millis(start).to_string(),
            end_time: humantime::format_rfc3339_millis(end).to_string(),
            // A run stopped early (a signal, an `:abort` threshold) is
            // held to what its schedule had planned by then.
            total: Section::of(
                "total",
                scheduled,
                scenario.truncated(scheduled).planned_events(),
                &figures.total,
                figures.started,
            ),
            phases,
            verification: None,
            timeline: Vec::new(),
            distribution: distribution(&figures.total),
            settings: std::collections::BTreeMap::new(),
            thresholds: Vec::new(),
        }
    }

    /// `thresholds` checked against the whole run (`total`, with this
    /// report's rates and verification); one crossed live (`aborted`)
    /// keeps the window's figures that stopped the run.
    pub fn check(
        &self,
        thresholds: &[Threshold],
        total: &Figures,
        aborted: Option<Outcome>,
    ) -> Vec<Outcome> {
        let mut observed = Observed::of(total, self.total.target_rate, self.total.achieved_rate);
        if let Some(v) = &self.verification {
            observed.verified = Some(v.passed);
            observed.end_to_end = v.end_to_end.as_ref().map(|e| Latencies {
                p50: e.p50_us as f64 / 1000.0,
                p90: e.p90_us as f64 / 1000.0,
                p99: e.p99_us as f64 / 1000.0,
                max: e.max_us as f64 / 1000.0,
                ..Latencies::default()
            });
        }
        thresholds
            .iter()
            .map(|t| match &aborted {
                Some(crossed) if crossed.expression == t.expression => crossed.clone(),
                _ => Outcome::check(t, &observed),
            })
            .collect()
    }

    /// The human table.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let t = &self.total;
        out.push_str(&format!(
            "run {}  scenario {}  seed {}  target {}\n",
            self.run_id, self.scenario.name, self.seed, self.target
        ));
        out.push_str(&format!(
            "rate     target {:.1}/s  achieved {:.1}/s ({:.1}%)\n",
            t.target_rate,
            t.achieved_rate,
            if t.target_rate > 0.0 {
                t.achieved_rate / t.target_rate * 100.0
            } else {
                0.0
            }
        ));
        out.push_str(&format!(
            "events   sent {}  accepted {}  rejected {}  duplicates {}  failed {}  retried batches {}\n",
            t.sent, t.accepted, t.rejected, t.duplicates, t.failed, t.retried_batches
        ));
        if !t.resent_batches.is_empty() || t.protocol_errors > 0 || t.unanswered > 0 {
            out.push_str(&format!(
                "re-sent  {}  protocol errors {}  unanswered {}\n",
                if t.resent_batches.is_empty() {
                    "none".to_owned()
                } else {
                    format!("batches {}", crate::cli::verify::reasons(&t.resent_batches))
                },
                t.protocol_errors,
                t.unanswered
            ));
        }
        out.push_str("latency  (batch ack, from intended send time)\n");
        out.push_str(&format!(
            "         p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms\n",
            t.latency.p50_ms,
            t.latency.p90_ms,
            t.latency.p99_ms,
            t.latency.p999_ms,
            t.latency.max_ms
        ));
        if t.longest_gap_s > 0.0 {
            out.push_str(&format!(
                "gap      longest {:.3} s without an accepted batch (ended {:.3} s into the run)\n",
                t.longest_gap_s, t.longest_gap_ended_s
            ));
        }
        let codes: Vec<String> = t
            .status_codes
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        out.push_str(&format!("status   {}\n", codes.join("  ")));
        if self.phases.len() > 1 {
            out.push_str("phase    duration   target/s  achieved/s     p99 ms\n");
            for p in &self.phases {
                out.push_str(&format!(
                    "{:<8} {:>8.1}s {:>10.1} {:>11.1} {:>10.3}\n",
                    p.name, p.duration_s, p.target_rate, p.achieved_rate, p.latency.p99_ms
                ));
            }
        }
        if let Some(v) = &self.verification {
            out.push_str(&format!("verify   {}\n", v.summary()));
            if let Some(e) = &v.end_to_end {
                out.push_str(&format!(
                    "end-to-end (append to aggregates applied)  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n",
                    e.p50_us as f64 / 1000.0,
                    e.p90_us as f64 / 1000.0,
                    e.p99_us as f64 / 1000.0,
                    e.max_us as f64 / 1000.0
                ));
            }
        }
        if !self.thresholds.is_empty() {
            out.push_str("thresholds\n");
            for o in &self.thresholds {
                out.push_str(&format!("         {}\n", o.line()));
            }
        }
        out
    }

    /// ghz's JSON report layout (durations in nanoseconds), for ghz tooling.
    pub fn ghz_json(&self, figures: &Figures) -> serde_json::Value {
        let ns = |q: f64| figures.quantile(q).as_nanos() as u64;
        let batches: u64 = figures.status_codes.values().sum();
        let total_ns = (self.total.duration_s * 1e9) as u64;
        let distribution: Vec<serde_json::Value> = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9]
            .iter()
            .map(|p| json!({ "percentage": p, "latency": ns(p / 100.0) }))
            .collect();
        let thresholds: Vec<serde_json::Value> = self
            .thresholds
            .iter()
            .map(|o| {
                json!({
                    "expression": o.expression,
                    "observed": o.observed,
                    "observedText": o.observed_text,
                    "passed": o.passed,
                    "aborted": o.aborted,
                })
            })
            .collect();
        let aborted = self.thresholds.iter().any(|o| o.aborted);
        json!({
            "name": format!("testbed sim {}", self.run_id),
            // ghz's reason for a run stopped before its end.
            "endReason": if aborted { "cancel" } else { "normal" },
            "thresholds": thresholds,
            "date": self.start_time,
            "count": batches,
            "total": total_ns,
            "average": (figures.latency.mean() * 1000.0) as u64,
            "fastest": figures.latency.min() * 1000,
            "slowest": figures.latency.max() * 1000,
            "rps": if self.total.duration_s > 0.0 { batches as f64 / self.total.duration_s } else { 0.0 },
            "latencyDistribution": distribution,
            "statusCodeDistribution": figures.status_codes,
            "errorDistribution": {},
            "options": {
                "call": "testbed.v1.IngestService.PublishStream",
                "host": self.target,
                "rps": self.total.target_rate,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::load::scenario::Phase;

    /// The JSON record reads back as the report that wrote it, and a
    /// record missing fields reads with them at their defaults.
    #[test]
    fn the_json_record_reads_back() {
        let scenario = Scenario {
            name: "two".into(),
            phases: vec![
                Phase::Ramp {
                    from: 0.0,
                    to: 100.0,
                    duration: Duration::from_millis(1500),
                },
                Phase::Pause {
                    duration: Duration::from_secs(2),
                },
            ],
        };
        let mut figures = RunFigures::new(2);
        figures.total.sent = 70;
        figures.total.accepted = 60;
        figures.total.status_codes.insert("OK".into(), 7);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut report = Report::new(
            "r1",
            &scenario,
            9,
            "http://ingest:50051",
            start,
            start + Duration::from_secs(4),
            Duration::from_millis(3500),
            &figures,
        );
        report.verification = Some(Verification {
            passed: false,
            expected: [1, 2, 3],
            processed: [1, 2, 2],
            never_acknowledged: [0, 0, 1],
            resent_batches: BTreeMap::from([("UNAVAILABLE".to_owned(), 2)]),
            dead_lettered: 0,
            diff: vec!["metric: -1".into()],
            end_to_end: None,
        });
        let json = serde_json::to_string_pretty(&report).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);

        let old: Report =
            serde_json::from_str(r#"{"run_id": "r0", "total": {"accepted": 5}}"#).unwrap();
        assert_eq!((old.run_id.as_str(), old.total.accepted), ("r0", 5));
        assert_eq!((old.total.unanswered, old.verification), (0, None));
    }

    /// The longest gap between accepting acknowledgements is in the
    /// record, counted from the run's start, and in the text.
    #[test]
    fn the_longest_publishing_gap_is_reported() {
        let scenario = Scenario {
            name: "steady".into(),
            phases: vec![Phase::Hold {
                rate: 100.0,
                duration: Duration::from_secs(10),
            }],
        };
        let mut figures = RunFigures::new(1);
        let t0 = figures.started.unwrap();
        for ms in [100, 200, 2_600, 2_700] {
            figures.update(0, |f| f.note_accepted(t0 + Duration::from_millis(ms)));
        }
        let start = SystemTime::UNIX_EPOCH;
        let report = Report::new(
            "gap",
            &scenario,
            1,
            "http://ingest:50051",
            start,
            start + Duration::from_secs(10),
            Duration::from_secs(10),
            &figures,
        );
        for section in [&report.total, &report.phases[0]] {
            assert!((section.longest_gap_s - 2.4).abs() < 1e-9, "{section:?}");
            assert!(
                (section.longest_gap_ended_s - 2.6).abs() < 1e-9,
                "{section:?}"
            );
        }
        let text = report.text();
        assert!(
            text.contains("longest 2.400 s without an accepted batch (ended 2.600 s into the run)"),
            "{text}"
        );
    }
}
