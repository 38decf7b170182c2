//! Thresholds checked against a run's figures: [`Observed`] holds the
//! figures every metric reads (the whole run, or a live window), and
//! [`Outcome`] is one threshold's verdict with the value it saw.

use serde::{Deserialize, Serialize};

use crate::load::stats::Figures;
use crate::thresholds::expr::{Kind, Metric, Stat, Threshold};

/// Latency statistics, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latencies {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latencies {
    /// The batch-ack latencies of `figures` (microseconds in the histogram).
    pub fn of(figures: &Figures) -> Self {
        let h = &figures.latency;
        if h.is_empty() {
            return Self::default();
        }
        let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max() as f64 / 1000.0,
            mean: h.mean() / 1000.0,
        }
    }

    fn get(&self, stat: Stat) -> f64 {
        match stat {
            Stat::P50 => self.p50,
            Stat::P90 => self.p90,
            Stat::P99 => self.p99,
            Stat::P999 => self.p999,
            Stat::Max => self.max,
            Stat::Mean => self.mean,
        }
    }
}

/// The figures thresholds are checked against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Batch-ack latency.
    pub ack: Latencies,
    /// End-to-end latency, when `--verify` measured it.
    pub end_to_end: Option<Latencies>,
    /// Batch attempts answered (every status).
    pub attempts: u64,
    /// Of them, answered with a status other than OK.
    pub errors: u64,
    /// Events sent (first attempts).
    pub sent: u64,
    /// Events rejected by validation.
    pub rejected: u64,
    /// Events given up.
    pub failed: u64,
    /// The schedule's rate, events/s.
    pub target_rate: f64,
    /// Accepted events per second.
    pub achieved_rate: f64,
    /// Batches re-sent.
    pub retried: u64,
    /// `--verify`'s verdict, when it ran.
    pub verified: Option<bool>,
    /// The longest gap between accepting acknowledgements, ms.
    pub gap_ms: f64,
}

impl Observed {
    /// The counters and latencies of `figures`, with the rates given (a
    /// run's rates depend on its schedule, which `figures` does not know).
    pub fn of(figures: &Figures, target_rate: f64, achieved_rate: f64) -> Self {
        let attempts = figures.status_codes.values().sum();
        let ok = figures.status_codes.get("OK").copied().unwrap_or(0);
        Self {
            ack: Latencies::of(figures),
            end_to_end: None,
            attempts,
            errors: attempts.saturating_sub(ok),
            sent: figures.sent,
            rejected: figures.rejected,
            failed: figures.failed,
            target_rate,
            achieved_rate,
            retried: figures.retried,
            verified: None,
            gap_ms: figures.longest_gap.as_secs_f64() * 1000.0,
        }
    }

    /// The metric's value in its own unit; `None` when not measured.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        let ratio = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
        Some(match metric {
            Metric::Ack(stat) => self.ack.get(stat),
            Metric::EndToEnd(stat) => self.end_to_end?.get(stat),
            Metric::Errors => ratio(self.errors, self.attempts),
            Metric::Rejected => ratio(self.rejected, self.sent),
            Metric::Failed => ratio(self.failed, self.sent),
            // Nothing asked for is nothing missed.
            Metric::Achieved if self.target_rate <= 0.0 => 1.0,
            Metric::Achieved => self.achieved_rate / self.target_rate,
            Metric::AchievedRate => self.achieved_rate,
            Metric::Retried => self.retried as f64,
            Metric::Verify => f64::from(u8::from(self.verified?)),
            Metric::Gap => self.gap_ms,
        })
    }
}

/// One threshold's verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Outcome {
    /// The expression as given.
    pub expression: String,
    /// The value seen, in the metric's unit: ms for latencies, a fraction
    /// for ratios (errors, rejected, failed, achieved), events/s, a count,
    /// or 1/0 for verify; 0 when not measured.
    pub observed: f64,
    /// The value seen as text with its unit (`12.345ms`, `0.12%`,
    /// `not measured`).
    pub observed_text: String,
    /// Whether the threshold held.
    pub passed: bool,
    /// Whether it was crossed live and stopped the run early.
    pub aborted: bool,
}

impl Outcome {
    /// `threshold` checked against `observed`.
    pub fn check(threshold: &Threshold, observed: &Observed) -> Self {
        let Some(value) = observed.value(threshold.metric) else {
            return Self {
                expression: threshold.expression.clone(),
                observed: 0.0,
                observed_text: "not measured".to_owned(),
                passed: false,
                aborted: false,
            };
        };
        let passed = match threshold.metric {
            Metric::Verify => value >= 1.0,
            _ => threshold.op.holds(value, threshold.limit),
        };
        Self {
            expression: threshold.expression.clone(),
            observed: value,
            observed_text: text(threshold.metric.kind(), value),
            passed,
            aborted: false,
        }
    }

    /// One line for the text report: `PASS ack_p99<10ms  observed 3.1ms`.
    pub fn line(&self) -> String {
        format!(
            "{} {}  observed {}{}",
            if self.passed { "pass" } else { "FAIL" },
            self.expression,
            self.observed_text,
            if self.aborted {
                "  (crossed live: the run was stopped early)"
            } else {
                ""
            }
        )
    }
}

/// A value with its unit.
fn text(kind: Kind, value: f64) -> String {
    match kind {
        Kind::Latency => format!("{value:.3}ms"),
        Kind::Ratio => format!("{:.3}%", value * 100.0),
        Kind::Rate => format!("{value:.1}/s"),
        Kind::Count => format!("{value}"),
        Kind::Verdict if value >= 1.0 => "passed".to_owned(),
        Kind::Verdict => "failed".to_owned(),
    }
}

/// Every threshold checked against `observed`.
pub fn check_all(thresholds: &[Threshold], observed: &Observed) -> Vec<Outcome> {
    thresholds
        .iter()
        .map(|t| Outcome::check(t, observed))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn check(expr: &str, observed: &Observed) -> Outcome {
        Outcome::check(&expr.parse().unwrap(), observed)
    }

    /// Each metric reads its own figure, in its own unit, against the limit.
    #[test]
    fn each_metric_reads_its_figure() {
        let mut figures = Figures::default();
        for ms in 1..=100 {
            figures.record_latency(Duration::from_millis(ms));
        }
        figures.sent = 1000;
        figures.rejected = 10;
        figures.failed = 5;
        figures.retried = 3;
        figures.status_codes.insert("OK".into(), 97);
        figures.status_codes.insert("UNAVAILABLE".into(), 3);
        let mut observed = Observed::of(&figures, 100.0, 90.0);
        observed.end_to_end = Some(Latencies {
            p99: 250.0,
            ..Latencies::default()
        });
        observed.verified = Some(true);
        observed.gap_ms = 2_400.0;
        for (expr, value, passed) in [
            ("ack_p99<100ms", 99.0, true),
            ("ack_p99<0.001ms", 99.0, false),
            ("ack_max<=100.1ms", 100.0, true),
            ("ack_p50>60ms", 50.0, false),
            ("e2e_p99<1s", 250.0, true),
            ("errors<0.1%", 0.03, false),
            ("errors<5%", 0.03, true),
            ("rejected<=0.01", 0.01, true),
            ("failed<0.1%", 0.005, false),
            ("achieved>=99%", 0.9, false),
            ("achieved>=90%", 0.9, true),
            ("achieved_rate>=90", 90.0, true),
            ("retried<3", 3.0, false),
            ("verify", 1.0, true),
            ("gap<3s", 2_400.0, true),
            ("gap<=2s", 2_400.0, false),
        ] {
            let o = check(expr, &observed);
            // Latencies within HDR's precision.
            assert!(
                (o.observed - value).abs() < value * 0.01 + 1e-9,
                "{expr}: {o:?}"
            );
            assert_eq!(o.passed, passed, "{expr}: {o:?}");
        }
        assert_eq!(check("errors<5%", &observed).observed_text, "3.000%");
        assert_eq!(
            check("retried<3", &observed).line(),
            "FAIL retried<3  observed 3"
        );
    }

    /// A metric not measured (no --verify) fails and says so.
    #[test]
    fn unmeasured_fails() {
        let observed = Observed::default();
        for expr in ["verify", "e2e_p99<1s"] {
            let o = check(expr, &observed);
            assert!(!o.passed);
            assert_eq!(o.observed_text, "not measured");
        }
    }

    /// A failed verification fails `verify`.
    #[test]
    fn failed_verify_fails() {
        let observed = Observed {
            verified: Some(false),
            ..Observed::default()
        };
        let o = check("verify", &observed);
        assert_eq!((o.passed, o.observed_text.as_str()), (false, "failed"));
    }
}
