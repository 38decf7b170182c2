//! `testbed sim --verify` as a child process of a test, with its JSON
//! report: the client side of the fault suite's runs.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::PathBuf;
use std::time::Duration;

/// A running `testbed sim`, its report going to a temporary file.
pub struct Sim {
    child: tokio::process::Child,
    report: PathBuf,
}

/// How a run ended.
pub struct Finished {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// What it wrote on stderr (the verdict line among it).
    pub stderr: String,
    /// The JSON report (`Null` when it wrote none).
    pub json: serde_json::Value,
}

/// Runs `testbed sim <args> --output <format> --output-file <file> <extra>`
/// to its end, the file a temporary one named after `name`: the process's
/// output and the report read back (`Null` when it wrote none or no JSON).
pub async fn run_to_end(
    name: &str,
    args: &[&str],
    format: &str,
    extra: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let file = std::env::temp_dir().join(format!("{name}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
        .arg("sim")
        .args(args)
        .args(["--output", format, "--output-file"])
        .arg(&file)
        .args(extra)
        .output()
        .await
        .unwrap();
    let report = serde_json::from_str(&std::fs::read_to_string(&file).unwrap_or_default())
        .unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    (output, report)
}

impl Sim {
    /// Starts `testbed sim <args> --run-id <run_id> --verify --output json`
    /// (`args`: target, rate, duration, ...), killed if dropped.
    pub fn start(run_id: &str, args: &[&str]) -> Self {
        let report = std::env::temp_dir().join(format!("sim-{run_id}-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&report);
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
            .arg("sim")
            .args(args)
            .args(["--run-id", run_id, "--verify", "--output", "json"])
            .arg("--output-file")
            .arg(&report)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { child, report }
    }

    /// `testbed sim --verify` against `ingest` (and `query` for the check)
    /// at `rate` events/s for `secs`, from `devices` devices, verification
    /// waiting `verify_timeout` at most.
    pub fn verified(
        run_id: &str,
        ingest: std::net::SocketAddr,
        query: std::net::SocketAddr,
        rate: u32,
        secs: u32,
        devices: u32,
        verify_timeout: &str,
    ) -> Self {
        let target = format!("http://{ingest}");
        let query = format!("http://{query}");
        let (rate, duration, devices) = (rate.to_string(), format!("{secs}s"), devices.to_string());
        Self::start(
            run_id,
            &[
                "--target",
                &target,
                "--query-target",
                &query,
                "--rate",
                &rate,
                "--duration",
                &duration,
                "--devices",
                &devices,
                "--verify-timeout",
                verify_timeout,
            ],
        )
    }

    /// Waits for the run to end, `limit` at most.
    pub async fn finish(self, limit: Duration) -> Finished {
        let output = tokio::time::timeout(limit, self.child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("sim still running after {limit:?}"))
            .unwrap();
        let json = serde_json::from_str(&std::fs::read_to_string(&self.report).unwrap_or_default())
            .unwrap_or_default();
        let _ = std::fs::remove_file(&self.report);
        Finished {
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            json,
        }
    }
}

/// The sum of a JSON array of counts (the report's per-kind figures).
pub fn sum(v: &serde_json::Value) -> u64 {
    v.as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0)
}
