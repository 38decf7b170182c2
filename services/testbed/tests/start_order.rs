//! Any process may start first: `testbed query` on a Redis where no worker
//! has started (no streams, no consumer group) answers what is true, zero
//! counts and empty lists, never INTERNAL; and again after that Redis comes
//! back empty.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Testbed;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_proto::v1::{
    GetPipelineStatsRequest, GetTokenUsageRequest, ListDevicesRequest, TopDevicesRequest,
    TopMetric, WatchPipelineStatsRequest,
};
use testbed_test_support::RedisServer;
use tokio_stream::StreamExt as _;

/// Every read RPC on an empty prefix: OK, with nothing in it.
async fn reads_answer_empty(query: &Testbed) {
    let mut client = QueryServiceClient::new(query.channel().await);
    let stats = client
        .get_pipeline_stats(GetPipelineStatsRequest::default())
        .await
        .expect("GetPipelineStats before any worker")
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(
        (
            stats.ingested,
            stats.processed,
            stats.pending,
            stats.backlog
        ),
        (0, 0, 0, 0)
    );
    let mut watch = client
        .watch_pipeline_stats(WatchPipelineStatsRequest::default())
        .await
        .expect("WatchPipelineStats before any worker")
        .into_inner();
    let first = watch.next().await.unwrap().expect("first watch message");
    assert_eq!(first.stats.unwrap().pending, 0);
    let devices = client
        .list_devices(ListDevicesRequest::default())
        .await
        .expect("ListDevices before any worker")
        .into_inner();
    assert!(devices.devices.is_empty());
    let tokens = client
        .get_token_usage(GetTokenUsageRequest::default())
        .await
        .expect("GetTokenUsage before any worker")
        .into_inner();
    assert!(tokens.groups.is_empty());
    let top = client
        .top_devices(TopDevicesRequest {
            metric: TopMetric::GpuUtilization as i32,
            ..Default::default()
        })
        .await
        .expect("TopDevices before any worker")
        .into_inner();
    assert!(top.devices.is_empty());
}

/// The query service started alone on a fresh Redis, then on the same
/// Redis restarted empty: every read answers OK and empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_started_first_answers_zeros() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let query = Testbed::start(&["query", "--redis-url", &url, "--health-interval", "100ms"]);
    query.wait_serving("testbed.v1.QueryService").await;
    reads_answer_empty(&query).await;

    redis.restart_empty();
    // The store is back once a read is no longer UNAVAILABLE (the query
    // reconnects on its own; nothing restarts it).
    let mut client = QueryServiceClient::new(query.channel().await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match client
            .get_pipeline_stats(GetPipelineStatsRequest::default())
            .await
        {
            Err(status) if status.code() == tonic::Code::Unavailable => {
                assert!(std::time::Instant::now() < deadline, "{status:?}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            _ => break,
        }
    }
    reads_answer_empty(&query).await;
}

/// `testbed ingest --partitions 8`, then `testbed worker --partitions 4` on
/// the same prefix: the worker refuses to start, naming the flag and both
/// values, and so does a query left at the default (4); `testbed query
/// --partitions 8` starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_whose_partitions_disagree_refuses_to_start() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ingest = Testbed::start(&["ingest", "--redis-url", &url, "--partitions", "8"]);
    ingest.wait_serving("testbed.v1.IngestService").await;
    let stderr = refused(&[
        "worker",
        "--redis-url",
        &url,
        "--partitions",
        "4",
        "--cpu-class",
        "normal",
    ])
    .await;
    assert!(
        stderr.contains("--partitions 4 disagrees with 8"),
        "{stderr}"
    );
    // Left at its default (4), the flag is not replaced by the stored 8:
    // refused the same way.
    let stderr = refused(&["query", "--redis-url", &url]).await;
    assert!(
        stderr.contains("--partitions 4 disagrees with 8"),
        "{stderr}"
    );
    let query = Testbed::start(&["query", "--redis-url", &url, "--partitions", "8"]);
    query.wait_serving("testbed.v1.QueryService").await;
}

/// The prefix reset under a running ingest and recorded again by another
/// deployment with 4 partitions: the ingest goes NOT_SERVING and refuses
/// appends (FAILED_PRECONDITION, SETTINGS_DISAGREE) instead of writing
/// with its 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_changed_under_a_running_ingest_stop_its_writes() {
    use testbed_proto::v1::PublishRequest;
    use testbed_proto::v1::ingest_service_client::IngestServiceClient;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_types::StatusExt as _;

    let mut redis = RedisServer::start();
    let url = redis.url();
    let ingest = Testbed::start(&[
        "ingest",
        "--redis-url",
        &url,
        "--partitions",
        "8",
        "--health-interval",
        "100ms",
    ]);
    ingest.wait_serving("testbed.v1.IngestService").await;
    redis.restart_empty();
    // Another deployment's first process records its settings (HSET, so
    // it wins even over a record the ingest made again meanwhile).
    let reply = redis.command(&[
        "HSET",
        "{testbed:control}:settings",
        "partitions",
        "4",
        "producer_window",
        "65536",
        "layout",
        "1",
    ]);
    assert!(reply.starts_with(':'), "{reply}");
    // Appends stop within a health interval (the probe re-reads the
    // record); until then they may still go through.
    let mut client = IngestServiceClient::new(ingest.channel().await);
    let minute = common::pipeline::test_minute();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut i = 0;
    let err = loop {
        i += 1;
        match client
            .publish(PublishRequest {
                events: vec![common::pipeline::event("reset", i, 1, minute)],
                ..Default::default()
            })
            .await
        {
            Err(err) if err.code() != tonic::Code::Unavailable => break err,
            _ => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "appends still accepted"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let failure = err.get_details_precondition_failure().unwrap();
    assert_eq!(failure.violations[0].r#type, "SETTINGS_DISAGREE");
    assert!(
        err.message().contains("--partitions 8 disagrees with 4"),
        "{err:?}"
    );
    // And readiness says so (at the next probe).
    let channel = ingest.channel().await;
    loop {
        let status = common::health_check(channel.clone(), "testbed.v1.IngestService")
            .await
            .unwrap();
        if status == ServingStatus::NotServing {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {status:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Ingest started first, alone, on an empty Redis with 8 partitions takes
/// a run; a worker and a query with the same 8 started afterwards process
/// it exactly: every event appended before the group existed is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_first_then_worker_with_the_same_partitions_counts_exactly() {
    use testbed_proto::v1::GetRunStatsRequest;
    let redis = RedisServer::start();
    let url = redis.url();
    let with = |role: &'static str| -> Vec<String> {
        [role, "--redis-url", &url, "--partitions", "8"]
            .map(str::to_owned)
            .to_vec()
    };
    let ingest = Testbed::start(&args(&with("ingest")));
    ingest.wait_serving("testbed.v1.IngestService").await;
    let sim = tokio::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["sim", "--target", &format!("http://{}", ingest.addr)])
        .args(["--rate", "1000", "--duration", "1s", "--devices", "50"])
        .args(["--run-id", "ingest-first"])
        .kill_on_drop(true)
        .output();
    let sent = tokio::time::timeout(std::time::Duration::from_secs(30), sim)
        .await
        .expect("the run ended within 30 s")
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let mut worker_args = with("worker");
    worker_args.extend(["--cpu-class", "normal", "--read-block", "100ms"].map(str::to_owned));
    let _worker = Testbed::start(&args(&worker_args));
    let query = Testbed::start(&args(&with("query")));
    query.wait_serving("testbed.v1.QueryService").await;
    let mut client = QueryServiceClient::new(query.channel().await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let processed = loop {
        let processed = client
            .get_run_stats(GetRunStatsRequest {
                run_id: "ingest-first".into(),
            })
            .await
            .map(|r| r.into_inner().processed)
            .unwrap_or(0);
        if processed >= 1000 || std::time::Instant::now() >= deadline {
            break processed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(processed, 1000);
}

/// `v` as the `&str`s [`Testbed::start`] takes.
fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A worker started first, alone, on an empty Redis: its control API
/// answers (GetStatus lists this replica, not paused) rather than an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_first_answers_its_control_api() {
    use testbed_proto::v1::GetStatusRequest;
    use testbed_proto::v1::worker_control_service_client::WorkerControlServiceClient;
    let redis = RedisServer::start();
    let url = redis.url();
    let worker = Testbed::start(&[
        "worker",
        "--redis-url",
        &url,
        "--cpu-class",
        "normal",
        "--heartbeat-interval",
        "100ms",
    ]);
    worker.wait_serving("testbed.v1.WorkerControlService").await;
    let mut client = WorkerControlServiceClient::new(worker.channel().await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = client
            .get_status(GetStatusRequest::default())
            .await
            .expect("GetStatus on a fresh Redis")
            .into_inner();
        if !status.workers.is_empty() {
            assert!(!status.desired.unwrap_or_default().paused);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs `testbed <args>` on ephemeral ports, expecting it to refuse to
/// start: exit 1 within 20 s. Returns its stderr.
async fn refused(args: &[&str]) -> String {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(args)
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(20), run)
        .await
        .expect("refused within 20 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    stderr
}

/// The first line of `testbed <args>`'s log (stdout) containing `needle`,
/// within 20 s; the process is killed after.
async fn log_line(args: &[&str], needle: &str) -> String {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(args)
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let found = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("the log ended without {needle:?}");
    })
    .await
    .expect("the line within 20 s");
    let _ = child.kill().await;
    found
}

/// At start the store says what an acknowledged append survives with the
/// Redis it found: a warning without an append-only file, an info line
/// with `appendfsync always`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_persistence_is_logged_at_start() {
    let volatile = RedisServer::start();
    let url = volatile.url();
    let line = log_line(&["ingest", "--redis-url", &url], "Redis persistence").await;
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("a Redis restart loses every acknowledged append"),
        "{line}"
    );
    let durable = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = durable.url();
    let line = log_line(&["ingest", "--redis-url", &url], "Redis persistence").await;
    assert!(line.contains("INFO"), "{line}");
    assert!(
        line.contains("every acknowledged append survives a Redis crash"),
        "{line}"
    );
}
