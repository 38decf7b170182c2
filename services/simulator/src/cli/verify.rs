//! `--verify`: after the run, the delivery ledger must show every accepted
//! event processed exactly once, per kind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_proto::v1::{GetPipelineStatsRequest, GetRunStatsRequest};
use testbed_server::auth::client::{Bearer, Token};
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
    /// Time from append to aggregates applied over the run's processed
    /// events, as GetRunStats reports it (the store's clock), if it did.
    pub end_to_end: Option<EndToEnd>,
}

/// End-to-end latency percentiles, microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndToEnd {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl EndToEnd {
    fn of(p: &testbed_proto::v1::LatencyPercentiles) -> Self {
        let us = |d: &Option<prost_types::Duration>| {
            d.as_ref().map_or(0, |d| {
                (d.seconds.max(0) as u64) * 1_000_000 + (d.nanos.max(0) as u64) / 1000
            })
        };
        Self {
            p50_us: us(&p.p50),
            p90_us: us(&p.p90),
            p99_us: us(&p.p99),
            max_us: us(&p.max),
        }
    }
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
/// expectation, before the pipeline is asked whether anything is left to
/// process.
const SETTLE: Duration = Duration::from_secs(3);

/// How the wait for the pipeline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every acknowledged event was processed or dead-lettered.
    Done,
    /// The figures stopped short, and the pipeline has nothing pending
    /// and no backlog: what is missing will not come.
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
    let mut missing = 0u64;
    for (i, kind) in KINDS.iter().enumerate() {
        let (p, e) = (processed[i], expected[i]);
        if p == e {
            continue;
        }
        let d = p as i64 - e as i64;
        let why = if p < e {
            missing += e - p;
            "acknowledged events not processed".to_owned()
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
    // Where the unprocessed went: the run's dead-letter count (all kinds)
    // accounts for them first; the rest are lost.
    if missing > 0 {
        let dead = dead_lettered.min(missing);
        let lost = missing - dead;
        diff.push(if lost == 0 {
            format!(
                "all {missing} were dead-lettered, not lost (the dead-letter stream holds them with the reason)"
            )
        } else if dead > 0 {
            format!(
                "of those {missing}, {dead} were dead-lettered (the dead-letter stream holds them) and {lost} are lost"
            )
        } else if matches!(drained, Drained::TimedOut(_)) {
            // Still pending or in the backlog when the wait ended: late,
            // not known to be lost.
            format!(
                "{lost} acknowledged events not processed yet: none was dead-lettered, and entries were still pending or in the backlog when the wait ended"
            )
        } else {
            format!("{lost} acknowledged events are lost: none was dead-lettered")
        });
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
            "processing stopped at {total} of {want} events, with nothing pending or in the backlog"
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
        end_to_end: None,
    }
}

/// Polls GetRunStats until the run has drained, then judges: every
/// acknowledged event is processed or dead-lettered, or the figures have
/// stopped short and the pipeline has nothing left to process (nothing
/// pending, no backlog: GetPipelineStats), or `timeout` passed. While
/// entries are still pending or in the backlog (a worker died and its
/// entries await takeover, a failure is being retried), it keeps waiting.
pub async fn verify(
    channel: Channel,
    token: Option<Token>,
    run_id: &str,
    expectation: &Expectation,
    timeout: Duration,
) -> Result<Verification, tonic::Status> {
    let mut client = QueryServiceClient::new(Bearer::new(channel, token));
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
            // The query service or its store recovering (a restart, a
            // connection broken by a Redis restart): asked again until the
            // deadline, as for a run still draining.
            Err(status) if retryable(status.code()) && Instant::now() < deadline => {
                tracing::debug!(%status, "GetRunStats failed; asking again");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(status) => return Err(status),
        };
        let processed = stats.as_ref().map_or([0; 3], |s| {
            [s.processed_gpu, s.processed_tokens, s.processed_metric]
        });
        let dead = stats.as_ref().map_or(0, |s| s.dead_lettered);
        let total: u64 = processed.iter().sum();
        if total + dead != last.0 {
            last = (total + dead, Instant::now());
        }
        let drained = if total + dead >= want {
            Some(Drained::Done)
        } else if last.1.elapsed() >= SETTLE && nothing_left(&mut client).await {
            Some(Drained::Stalled)
        } else if Instant::now() >= deadline {
            Some(Drained::TimedOut(timeout))
        } else {
            None
        };
        if let Some(drained) = drained {
            let mut verdict = judge(expectation, processed, dead, drained);
            verdict.end_to_end = stats
                .as_ref()
                .and_then(|s| s.end_to_end_latency.as_ref())
                .map(EndToEnd::of);
            return Ok(verdict);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Codes a read answers while the service or its store recovers.
fn retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
    )
}

/// Whether the pipeline has nothing pending and no backlog. A query
/// service that cannot say (an older one, an error) counts as "nothing
/// left", so the wait still ends at the stall.
async fn nothing_left(client: &mut QueryServiceClient<Bearer<Channel>>) -> bool {
    match client
        .get_pipeline_stats(GetPipelineStatsRequest { window: None })
        .await
    {
        Ok(r) => r
            .into_inner()
            .stats
            .is_none_or(|s| s.pending == 0 && s.backlog == 0),
        Err(status) => {
            tracing::debug!(%status, "pipeline figures unavailable; judging the stall as final");
            true
        }
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
                "gpu: processed 80, acknowledged 100 (-20): acknowledged events not processed".to_owned(),
                "tokens: processed 60, acknowledged 50 (+10): more than were acknowledged and sent unacknowledged: events counted twice".to_owned(),
                "20 acknowledged events are lost: none was dead-lettered".to_owned(),
                "5 events were never acknowledged".to_owned(),
                "processing stopped at 140 of 150 events, with nothing pending or in the backlog".to_owned(),
            ]
        );
    }

    /// Acknowledged events the pipeline dead-lettered are named as
    /// dead-lettered, not lost; beyond the dead-letter count, lost.
    #[test]
    fn dead_lettered_events_are_not_called_lost() {
        let e = expectation([100, 50, 0], [0; 3]);
        let v = judge(&e, [90, 45, 0], 15, Drained::Done);
        assert!(!v.passed);
        assert_eq!(
            v.diff,
            vec![
                "gpu: processed 90, acknowledged 100 (-10): acknowledged events not processed".to_owned(),
                "tokens: processed 45, acknowledged 50 (-5): acknowledged events not processed".to_owned(),
                "all 15 were dead-lettered, not lost (the dead-letter stream holds them with the reason)".to_owned(),
            ]
        );
        let v = judge(&e, [90, 45, 0], 6, Drained::Stalled);
        assert_eq!(
            v.diff[2],
            "of those 15, 6 were dead-lettered (the dead-letter stream holds them) and 9 are lost"
        );
    }

    /// Events still pending when the wait times out are late, not called
    /// lost: the pipeline may yet process them.
    #[test]
    fn events_pending_at_the_timeout_are_not_called_lost() {
        let e = expectation([100, 0, 0], [0; 3]);
        let v = judge(
            &e,
            [94, 0, 0],
            0,
            Drained::TimedOut(Duration::from_secs(20)),
        );
        assert!(!v.passed);
        assert_eq!(
            v.diff,
            vec![
                "gpu: processed 94, acknowledged 100 (-6): acknowledged events not processed".to_owned(),
                "6 acknowledged events not processed yet: none was dead-lettered, and entries were still pending or in the backlog when the wait ended".to_owned(),
                "not drained after 20s".to_owned(),
            ]
        );
    }
}
