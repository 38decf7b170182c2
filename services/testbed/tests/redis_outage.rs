//! A Redis outage under PublishStream load, on real processes: `testbed
//! ingest`, `worker` and `query` on one `redis-server` this test starts
//! (AOF on, fsync always), and `testbed sim --verify` as the client. Redis
//! is SIGKILLed mid-run and restarted: on its own data, every batch is
//! acknowledged OK or refused with a retryable code and re-sent, and every
//! event is processed exactly once; on an emptied data directory, the
//! services recover without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Testbed;
use testbed_proto::v1::GetRunStatsRequest;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_test_support::RedisServer;

/// Ingest, one worker and query as three processes on `redis`.
struct Pipeline {
    ingest: Testbed,
    _worker: Testbed,
    query: Testbed,
}

impl Pipeline {
    async fn start(redis: &RedisServer) -> Self {
        let url = redis.url();
        let common = ["--redis-url", url.as_str(), "--health-interval", "100ms"];
        let ingest = Testbed::start(&[&["ingest"][..], &common].concat());
        let worker = Testbed::start(
            &[
                &["worker"][..],
                &common,
                &[
                    "--claim-idle",
                    "500ms",
                    "--maintenance-interval",
                    "100ms",
                    "--read-block",
                    "100ms",
                    "--cpu-class",
                    "normal",
                ],
            ]
            .concat(),
        );
        let query = Testbed::start(&[&["query"][..], &common].concat());
        ingest.wait_serving("testbed.v1.IngestService").await;
        worker.wait_serving("").await;
        query.wait_serving("testbed.v1.QueryService").await;
        Self {
            ingest,
            _worker: worker,
            query,
        }
    }

    /// Events of `run_id` processed so far (0 before the first).
    async fn processed(&self, run_id: &str) -> u64 {
        let mut client = QueryServiceClient::new(self.query.channel().await);
        match client
            .get_run_stats(GetRunStatsRequest {
                run_id: run_id.to_owned(),
            })
            .await
        {
            Ok(r) => {
                let s = r.into_inner();
                s.processed_gpu + s.processed_tokens + s.processed_metric
            }
            Err(_) => 0,
        }
    }

    /// Polls until at least `events` of `run_id` are processed (15 s at most).
    async fn wait_processed(&self, run_id: &str, events: u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.processed(run_id).await < events {
            assert!(
                Instant::now() < deadline,
                "{run_id}: {events} events not processed in 15 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `testbed sim --verify` run against the pipeline, started in the
/// background; its JSON report is read when it ends.
struct Sim {
    child: tokio::process::Child,
    report: PathBuf,
}

impl Sim {
    fn start(pipe: &Pipeline, run_id: &str, rate: &str, duration: &str) -> Self {
        let report =
            std::env::temp_dir().join(format!("outage-{run_id}-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&report);
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
            .args(["sim", "--target", &format!("http://{}", pipe.ingest.addr)])
            .args(["--query-target", &format!("http://{}", pipe.query.addr)])
            .args(["--rate", rate, "--duration", duration, "--devices", "200"])
            .args(["--run-id", run_id, "--verify", "--verify-timeout", "20s"])
            .args(["--output", "json", "--output-file"])
            .arg(&report)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { child, report }
    }

    /// Waits for the run to end (30 s at most): exit status, stderr, report.
    async fn finish(self) -> (std::process::ExitStatus, String, serde_json::Value) {
        let output = tokio::time::timeout(Duration::from_secs(30), self.child.wait_with_output())
            .await
            .expect("the simulator run ended within 30 s")
            .unwrap();
        let json = serde_json::from_str(&std::fs::read_to_string(&self.report).unwrap_or_default())
            .unwrap_or_default();
        let _ = std::fs::remove_file(&self.report);
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
            json,
        )
    }
}

fn u64_at(json: &serde_json::Value, pointer: &str) -> u64 {
    json.pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing in {json}"))
}

/// How long Redis stays down: the fault itself, not a wait for readiness.
const OUTAGE: Duration = Duration::from_millis(500);

/// Redis SIGKILLed under load and restarted on its own AOF: batches
/// refused meanwhile are answered UNAVAILABLE (never OK) and re-sent, and
/// the pipeline processes every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_kill_loses_no_acknowledged_event_and_counts_none_twice() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let pipe = Pipeline::start(&redis).await;
    let run = "outage-aof";
    let sim = Sim::start(&pipe, run, "3000", "6s");
    // Kill once the pipeline is visibly flowing (about 1.5 s in).
    pipe.wait_processed(run, 4000).await;
    redis.stop();
    tokio::time::sleep(OUTAGE).await;
    redis.restart();
    let (status, stderr, report) = sim.finish().await;
    assert!(status.success(), "{status}: {stderr}\n{report}");

    let sent = u64_at(&report, "/total/sent");
    assert_eq!(sent, 18_000);
    assert_eq!(u64_at(&report, "/total/accepted"), sent, "{report}");
    assert_eq!(u64_at(&report, "/total/failed"), 0, "{report}");
    assert_eq!(u64_at(&report, "/total/unanswered"), 0, "{report}");
    assert_eq!(u64_at(&report, "/total/protocol_errors"), 0, "{report}");
    // Every answer is OK or a retryable refusal; the outage shows.
    let codes = report["total"]["status_codes"].as_object().unwrap();
    for code in codes.keys() {
        assert!(
            ["OK", "UNAVAILABLE", "RESOURCE_EXHAUSTED"].contains(&code.as_str()),
            "{code}: {report}"
        );
    }
    let unavailable = codes
        .get("UNAVAILABLE")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    assert!(unavailable > 0, "no batch was refused: {report}");
    let resent = &report["total"]["resent_batches"];
    assert!(
        u64_at(resent, "/UNAVAILABLE") >= unavailable.min(1),
        "{report}"
    );
    // Exactly once, from the pipeline's own ledger.
    let v = &report["verification"];
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["processed"], v["expected"], "{v}");
    assert_eq!(pipe.processed(run).await, sent);
    assert!(v["diff"].as_array().unwrap().is_empty(), "{v}");
}

/// Redis SIGKILLed and restarted *empty*: ingest and the worker recover
/// without a restart (consumer group and scripts made again), and a run
/// after the restart is processed exactly once. What was acknowledged
/// before the wipe is gone with the data, as the guarantees say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_recover_from_a_redis_that_comes_back_empty() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let pipe = Pipeline::start(&redis).await;
    let before = "outage-wiped";
    let sim = Sim::start(&pipe, before, "2000", "3s");
    pipe.wait_processed(before, 2000).await;
    redis.restart_empty();
    // The run across the wipe ends (its verdict cannot pass: the ledger
    // was wiped with the data) and refused nothing as OK.
    let (_, stderr, report) = sim.finish().await;
    assert_eq!(u64_at(&report, "/total/protocol_errors"), 0, "{stderr}");

    let after = "outage-after-wipe";
    let (status, stderr, report) = Sim::start(&pipe, after, "2000", "2s").finish().await;
    assert!(status.success(), "{status}: {stderr}\n{report}");
    let v = &report["verification"];
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(u64_at(&report, "/total/accepted"), 4000, "{report}");
    assert_eq!(pipe.processed(after).await, 4000);
}
