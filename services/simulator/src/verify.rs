//! `--verify`: after the run, the delivery ledger must show every accepted
//! event processed exactly once, per kind.

use std::time::{Duration, Instant};

use serde::Serialize;
use testbed_proto::v1::GetRunStatsRequest;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use tonic::transport::Channel;

/// What the run sent and the pipeline reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verification {
    /// Whether the counts match.
    pub passed: bool,
    /// Accepted events, by kind (gpu, tokens, metric).
    pub expected: [u64; 3],
    /// Processed events reported by GetRunStats, by kind.
    pub processed: [u64; 3],
    /// Events the pipeline dead-lettered for this run, if reported.
    pub dead_lettered: u64,
    /// Differences, one line each; empty when passed.
    pub diff: Vec<String>,
}

impl Verification {
    /// One line for the report.
    pub fn summary(&self) -> String {
        if self.passed {
            format!(
                "PASSED: {} events processed exactly once",
                self.expected.iter().sum::<u64>()
            )
        } else {
            format!("FAILED: {}", self.diff.join("; "))
        }
    }
}

const KINDS: [&str; 3] = ["gpu", "tokens", "metric"];

/// How long the processed figures may stand still, short of the
/// expectation, before the run counts as drained as far as it will go.
const SETTLE: Duration = Duration::from_secs(3);

/// Polls GetRunStats until the run has drained (processed figures reach
/// the expectation, or stop moving for a few seconds short of it) or
/// `timeout`, then compares.
pub async fn verify(
    channel: Channel,
    run_id: &str,
    expected: [u64; 3],
    timeout: Duration,
) -> Result<Verification, tonic::Status> {
    let mut client = QueryServiceClient::new(channel);
    let deadline = Instant::now() + timeout;
    let want: u64 = expected.iter().sum();
    let mut last = (u64::MAX, Instant::now());
    loop {
        let stats = match client
            .get_run_stats(GetRunStatsRequest {
                run_id: run_id.to_owned(),
            })
            .await
        {
            Ok(r) => Some(r.into_inner()),
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => return Err(status),
        };
        let processed = stats.as_ref().map_or([0; 3], |s| {
            [s.processed_gpu, s.processed_tokens, s.processed_metric]
        });
        let dead = stats.as_ref().map_or(0, |s| s.dead_lettered);
        let total: u64 = processed.iter().sum();
        if total != last.0 {
            last = (total, Instant::now());
        }
        let done = total >= want;
        let stalled = !done && last.1.elapsed() >= SETTLE;
        if done || stalled || Instant::now() >= deadline {
            let mut diff = Vec::new();
            for (i, kind) in KINDS.iter().enumerate() {
                if processed[i] != expected[i] {
                    let (p, e) = (processed[i] as i64, expected[i] as i64);
                    diff.push(format!("{kind}: processed {p}, accepted {e} ({:+})", p - e));
                }
            }
            if stalled {
                diff.push(format!(
                    "processing stopped at {total} of {want} events for {}",
                    humantime::format_duration(SETTLE)
                ));
            } else if !done {
                diff.push(format!(
                    "not drained after {}",
                    humantime::format_duration(timeout)
                ));
            }
            return Ok(Verification {
                passed: diff.is_empty(),
                expected,
                processed,
                dead_lettered: dead,
                diff,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
