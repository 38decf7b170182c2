//! Driving `testbed sim` and reading its JSON report, through the
//! simulator's own type ([`Report`]).
//!
//! The simulator is open-loop: batches are due at fixed times whatever the
//! server does, and latency is measured from each batch's *intended* send
//! time, so a stalled server shows up as latency instead of silently
//! lowering the offered rate (coordinated omission).

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use testbed_sim::cli::report::{Latency, Report};

use crate::error::{Context as _, Error, Result};
use crate::process::Proc;

/// One simulator run.
#[derive(Debug, Clone)]
pub struct SimSpec {
    /// Ingest endpoint.
    pub target: String,
    /// Query endpoint for `--verify`; none: no verification.
    pub verify_with: Option<String>,
    /// Events per second.
    pub rate: f64,
    /// Schedule length.
    pub duration: Duration,
    /// `--devices`.
    pub devices: u32,
    /// `--connections`.
    pub connections: u32,
    /// `--streams` per connection.
    pub streams: u32,
    /// `--batch-size`.
    pub batch_size: u32,
    /// `--drain-timeout`.
    pub drain_timeout: Duration,
    /// `--verify-timeout`.
    pub verify_timeout: Duration,
    /// `--run-id`.
    pub run_id: String,
    /// Where the JSON report goes.
    pub report: PathBuf,
}

impl SimSpec {
    /// The `testbed sim …` arguments.
    pub fn args(&self) -> Vec<String> {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let mut args: Vec<String> = vec![
            "sim".into(),
            "--target".into(),
            self.target.clone(),
            "--rate".into(),
            format!("{:.0}", self.rate.max(1.0)),
            "--duration".into(),
            d(self.duration),
            "--devices".into(),
            self.devices.to_string(),
            "--connections".into(),
            self.connections.to_string(),
            "--streams".into(),
            self.streams.to_string(),
            "--batch-size".into(),
            self.batch_size.to_string(),
            "--drain-timeout".into(),
            d(self.drain_timeout),
            "--run-id".into(),
            self.run_id.clone(),
            "--output".into(),
            "json".into(),
            "--output-file".into(),
            self.report.display().to_string(),
        ];
        if let Some(query) = &self.verify_with {
            args.extend([
                "--verify".into(),
                "--query-target".into(),
                query.clone(),
                "--verify-timeout".into(),
                d(self.verify_timeout),
            ]);
        }
        args
    }

    /// The longest the run can legitimately take: schedule, drain and
    /// verification, plus slack for start-up.
    pub fn limit(&self) -> Duration {
        let verify = if self.verify_with.is_some() {
            self.verify_timeout
        } else {
            Duration::ZERO
        };
        self.duration + self.drain_timeout + verify + Duration::from_secs(30)
    }

    /// Starts it.
    pub fn spawn(
        &self,
        testbed: &Path,
        env: &[(String, String)],
        remove: &[String],
        log: &Path,
    ) -> Result<Proc> {
        let _ = std::fs::remove_file(&self.report);
        Proc::spawn("sim", testbed, &self.args(), env, remove, log)
    }
}

/// Reads a report file.
pub fn read_report(path: &Path) -> Result<Report> {
    let bytes = std::fs::read(path).context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::parse(path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields the harness uses are read from the simulator's layout,
    /// also from a report that lacks some.
    #[test]
    fn reads_the_report_layout() {
        let json = r#"{
          "run_id": "bench-1", "seed": 1, "scenario": {"name": "steady"},
          "total": {"name": "total", "duration_s": 2.0, "target_rate": 1000.0,
            "achieved_rate": 990.0, "sent": 2000, "accepted": 1980, "rejected": 0,
            "duplicates": 0, "retried_batches": 1, "failed": 20,
            "latency": {"p50_ms": 1.5, "p90_ms": 2.0, "p99_ms": 3.0, "p999_ms": 4.0,
                        "max_ms": 5.0, "mean_ms": 1.6},
            "status_codes": {"OK": 20}},
          "phases": [],
          "verification": {"passed": false, "expected": [1, 2, 3],
            "processed": [1, 2, 2], "dead_lettered": 0, "diff": ["metric: -1"]}
        }"#;
        let report: Report = serde_json::from_str(json).unwrap();
        assert_eq!(report.total.accepted, 1980);
        assert_eq!(report.total.latency.p999_ms, 4.0);
        let v = report.verification.unwrap();
        assert!(!v.passed);
        assert_eq!(v.diff, vec!["metric: -1"]);
    }

    /// Verification flags appear only with a query endpoint.
    #[test]
    fn verify_flags_only_with_a_query_target() {
        let mut spec = SimSpec {
            target: "http://127.0.0.1:1".into(),
            verify_with: None,
            rate: 1234.4,
            duration: Duration::from_secs(5),
            devices: 100,
            connections: 2,
            streams: 2,
            batch_size: 100,
            drain_timeout: Duration::from_secs(10),
            verify_timeout: Duration::from_secs(30),
            run_id: "bench-x".into(),
            report: "/tmp/r.json".into(),
        };
        let args = spec.args();
        assert!(!args.contains(&"--verify".to_owned()));
        assert!(args.windows(2).any(|w| w == ["--rate", "1234"]));
        spec.verify_with = Some("http://127.0.0.1:2".into());
        assert!(spec.args().contains(&"--verify".to_owned()));
        assert_eq!(spec.limit(), Duration::from_secs(75));
    }
}
