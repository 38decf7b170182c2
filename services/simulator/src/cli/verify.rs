//! `--verify`: after the run, the delivery ledger must show every accepted
//! event processed exactly once, per kind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use testbed_proto::v1::GetRunStatsRequest;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use tonic::transport::Channel;

use crate::load::stats::Figures;

/// What the run sent and the pipeline reports (missing fields read as
/// their defaults, as in [`crate::cli::report::Report`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Verification {
    /// Whether every acknowledged event was processed exactly once and
    /// every sent event was acknowledged.
    pub passed: bool,
    /// Events the server acknowledged as accepted, by kind (gpu, tokens,
    /// metric): what the pipeline must have processed.
    pub expected: [u64; 3],
    /// Processed events reported by GetRunStats, by kind.
    pub processed: [u64; 3],
    /// Events sent but never acknowledged, by kind: given up after
    /// refusals, or unanswered when the run ended. The server may or may
    /// not have appended them.
    pub never_acknowledged: [u64; 3],
    /// Batches re-sent, by why (a status code name, `PROTOCOL_ERROR`,
    /// `STREAM_BROKEN`), so an outage shows instead of a silent gap.
    pub resent_batches: BTreeMap<String, u64>,
    /// Events the pipeline dead-lettered for this run, if reported.
    pub dead_lettered: u64,
    /// Differences, one line each; empty when passed.
    pub diff: Vec<String>,
}

/// What the simulator knows of its own run: the acknowledged side of the
/// ledger, which `--verify` compares with the pipeline's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectation {
    /// Events acknowledged as accepted, by kind.
    pub acknowledged: [u64; 3],
    /// Events sent and never acknowledged, by kind.
    pub never_acknowledged: [u64; 3],
    /// Batches given up after refusals or retries, and their events.
    pub failed_batches: u64,
    /// Events in those batches.
    pub failed_events: u64,
    /// The first few given-up batch sequences.
    pub failed_sequences: Vec<u64>,
    /// Events still unanswered when the drain timeout ended.
    pub unanswered: u64,
    /// Batches re-sent, by why.
    pub resent: BTreeMap<String, u64>,
}

impl Expectation {
    /// The expectation of a run's figures.
    pub fn of(figures: &Figures) -> Self {
        Self {
            acknowledged: figures.accepted_kinds,
            never_acknowledged: figures.unacknowledged_kinds(),
            failed_batches: figures.failed_batches,
            failed_events: figures.failed,
            failed_sequences: figures.failed_sequences.clone(),
            unanswered: figures.unanswered(),
            resent: figures.resent.clone(),
        }
    }
}

impl Verification {
    /// One line for the report.
    pub fn summary(&self) -> String {
        if self.passed {
            let mut line = format!(
                "PASSED: {} events processed exactly once",
                self.expected.iter().sum::<u64>()
            );
            let resent: u64 = self.resent_batches.values().sum();
            if resent > 0 {
                line.push_str(&format!(
                    "; {resent} batches refused or unanswered and re-sent ({})",
                    reasons(&self.resent_batches)
                ));
            }
            line
        } else {
            format!("FAILED: {}", self.diff.join("; "))
        }
    }
}

/// `UNAVAILABLE 39, STREAM_BROKEN 2`.
pub fn reasons(resent: &BTreeMap<String, u64>) -> String {
    resent
        .iter()
        .map(|(why, n)| format!("{why} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const KINDS: [&str; 3] = ["gpu", "tokens", "metric"];

/// How long the processed figures may stand still, short of the
/// expectation, before the run counts as drained as far as it will go.
const SETTLE: Duration = Duration::from_secs(3);

/// How the wait for the pipeline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every acknowledged event was processed.
    Done,
    /// The processed figures stopped short for [`SETTLE`].
    Stalled,
    /// The verify timeout passed first.
    TimedOut(Duration),
}

/// Compares the pipeline's figures with what the run knows, and says who
/// is at fault for each difference: acknowledged events missing or counted
/// twice are the pipeline's; events never acknowledged are the delivery's
/// (the simulator gave them up, or the run ended first), not the pipeline's.
pub fn judge(
    expectation: &Expectation,
    processed: [u64; 3],
    dead_lettered: u64,
    drained: Drained,
) -> Verification {
    let expected = expectation.acknowledged;
    let never = expectation.never_acknowledged;
    let mut diff = Vec::new();
    for (i, kind) in KINDS.iter().enumerate() {
        let (p, e) = (processed[i], expected[i]);
        if p == e {
            continue;
        }
        let d = p as i64 - e as i64;
        let why = if p < e {
            "acknowledged events missing from the pipeline".to_owned()
        } else if p - e <= never[i] {
            format!(
                "{} of the {} {kind} events never acknowledged were appended all the same: not a double count",
                p - e,
                never[i]
            )
        } else {
            "more than were acknowledged and sent unacknowledged: events counted twice".to_owned()
        };
        diff.push(format!(
            "{kind}: processed {p}, acknowledged {e} ({d:+}): {why}"
        ));
    }
    let never_total: u64 = never.iter().sum();
    if never_total > 0 {
        let mut line = format!("{never_total} events were never acknowledged");
        let mut parts = Vec::new();
        if expectation.failed_batches > 0 {
            parts.push(format!(
                "{} in {} batches given up (sequences {:?}{})",
                expectation.failed_events,
                expectation.failed_batches,
                expectation.failed_sequences,
                if expectation.failed_batches > expectation.failed_sequences.len() as u64 {
                    ", ..."
                } else {
                    ""
                }
            ));
        }
        if expectation.unanswered > 0 {
            parts.push(format!(
                "{} unanswered when the drain timeout ended",
                expectation.unanswered
            ));
        }
        if !parts.is_empty() {
            line.push_str(&format!(": {}", parts.join(", ")));
        }
        if !expectation.resent.is_empty() {
            line.push_str(&format!(
                "; batches re-sent: {}",
                reasons(&expectation.resent)
            ));
        }
        diff.push(line);
    }
    let want: u64 = expected.iter().sum();
    let total: u64 = processed.iter().sum();
    match drained {
        Drained::Done => {}
        Drained::Stalled => diff.push(format!(
            "processing stopped at {total} of {want} events for {}",
            humantime::format_duration(SETTLE)
        )),
        Drained::TimedOut(timeout) => diff.push(format!(
            "not drained after {}",
            humantime::format_duration(timeout)
        )),
    }
    Verification {
        passed: diff.is_empty(),
        expected,
        processed,
        never_acknowledged: never,
        resent_batches: expectation.resent.clone(),
        dead_lettered,
        diff,
    }
}

/// Polls GetRunStats until the run has drained (processed figures reach
/// the expectation, or stop moving for a few seconds short of it) or
/// `timeout`, then judges.
pub async fn verify(
    channel: Channel,
    run_id: &str,
    expectation: &Expectation,
    timeout: Duration,
) -> Result<Verification, tonic::Status> {
    let mut client = QueryServiceClient::new(channel);
    let deadline = Instant::now() + timeout;
    let want: u64 = expectation.acknowledged.iter().sum();
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
        let drained = if total >= want {
            Some(Drained::Done)
        } else if last.1.elapsed() >= SETTLE {
            Some(Drained::Stalled)
        } else if Instant::now() >= deadline {
            Some(Drained::TimedOut(timeout))
        } else {
            None
        };
        if let Some(drained) = drained {
            return Ok(judge(expectation, processed, dead, drained));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expectation(acknowledged: [u64; 3], never: [u64; 3]) -> Expectation {
        Expectation {
            acknowledged,
            never_acknowledged: never,
            ..Default::default()
        }
    }

    /// Processed exactly what was acknowledged, with refusals re-sent:
    /// passed, and the summary names the re-sends.
    #[test]
    fn passes_and_names_the_resent_batches() {
        let mut e = expectation([10, 20, 30], [0; 3]);
        e.resent.insert("UNAVAILABLE".into(), 39);
        let v = judge(&e, [10, 20, 30], 0, Drained::Done);
        assert!(v.passed, "{v:?}");
        assert_eq!(
            v.summary(),
            "PASSED: 60 events processed exactly once; 39 batches refused or unanswered and re-sent (UNAVAILABLE 39)"
        );
    }

    /// Events appended whose acknowledgement never came are blamed on the
    /// delivery, with the batches named, not on the pipeline.
    #[test]
    fn unacknowledged_events_are_not_blamed_on_the_pipeline() {
        let mut e = expectation([100, 0, 0], [30, 0, 0]);
        e.failed_batches = 1;
        e.failed_events = 30;
        e.failed_sequences = vec![17];
        let v = judge(&e, [130, 0, 0], 0, Drained::Done);
        assert!(!v.passed);
        assert_eq!(
            v.diff,
            vec![
                "gpu: processed 130, acknowledged 100 (+30): 30 of the 30 gpu events never acknowledged were appended all the same: not a double count".to_owned(),
                "30 events were never acknowledged: 30 in 1 batches given up (sequences [17])".to_owned(),
            ]
        );
    }

    /// Acknowledged events missing, or more processed than could have been
    /// sent, are the pipeline's fault and say so.
    #[test]
    fn losses_and_double_counts_are_the_pipelines() {
        let e = expectation([100, 50, 0], [0, 5, 0]);
        let v = judge(&e, [80, 60, 0], 0, Drained::Stalled);
        assert!(!v.passed);
        assert_eq!(
            v.diff,
            vec![
                "gpu: processed 80, acknowledged 100 (-20): acknowledged events missing from the pipeline".to_owned(),
                "tokens: processed 60, acknowledged 50 (+10): more than were acknowledged and sent unacknowledged: events counted twice".to_owned(),
                "5 events were never acknowledged".to_owned(),
                "processing stopped at 140 of 150 events for 3s".to_owned(),
            ]
        );
    }
}
