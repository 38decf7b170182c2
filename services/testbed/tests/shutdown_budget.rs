//! Shutdown within a budget, whatever the collector does (#35). `testbed
//! ingest`, `worker` and `query` on their own Redis, every span sampled,
//! serve a load, then get SIGTERM together. Each exits 0 within
//! --shutdown-grace + --telemetry-flush-timeout + 0.5 s, and its last log
//! line says which providers flushed or which timed out. Four collectors:
//! none configured, a healthy receiver, a port that drops connection
//! attempts, one that accepts connections and never answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::Testbed;
use common::otlp::{DroppingPort, SilentCollector, start_collector};
use common::pipeline::{event, test_minute};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use testbed_proto::v1::ingest_service_client::IngestServiceClient;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_proto::v1::{GetPipelineStatsRequest, PublishRequest};
use testbed_test_support::RedisServer;

/// --shutdown-grace of every process.
const GRACE: Duration = Duration::from_secs(1);
/// --telemetry-flush-timeout of every process.
const FLUSH: Duration = Duration::from_millis(500);
/// Allowed beyond the two budgets: the signal's delivery, starting the
/// flush threads, stopping the runtime, and this test's 10 ms polling.
const SLACK: Duration = Duration::from_millis(500);
/// Batches of 5 events published before SIGTERM.
const PUBLISHES: u64 = 20;

/// The three processes of a split deployment, on one Redis.
struct Split {
    ingest: Testbed,
    worker: Testbed,
    query: Testbed,
    _redis: RedisServer,
}

/// The processes' environment: every span sampled and, with `endpoint`,
/// OTLP export there. Batch delays and the metric interval are a minute,
/// so nothing is exported before SIGTERM: what reaches a collector came
/// with the final flush, and against a broken one every export starts
/// there.
fn otel_env(endpoint: Option<&str>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "60000".to_owned()),
        ("OTEL_BLRP_SCHEDULE_DELAY", "60000".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "60000".to_owned()),
    ];
    if let Some(endpoint) = endpoint {
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()));
    }
    env
}

/// Starts the three processes, waits until they serve, and puts a load
/// through all of them: ingest takes [`PUBLISHES`] batches, the worker
/// processes them, query is asked until it reports them processed.
async fn start_and_load(endpoint: Option<&str>) -> Split {
    let redis = RedisServer::start();
    let url = redis.url();
    let env = otel_env(endpoint);
    let grace = humantime::format_duration(GRACE).to_string();
    let flush = humantime::format_duration(FLUSH).to_string();
    let start = |role: &str| {
        Testbed::start_logged(
            &[
                role,
                "--redis-url",
                &url,
                "--shutdown-grace",
                &grace,
                "--telemetry-flush-timeout",
                &flush,
            ],
            &env,
        )
    };
    let split = Split {
        ingest: start("ingest"),
        worker: start("worker"),
        query: start("query"),
        _redis: redis,
    };
    for tb in [&split.ingest, &split.worker, &split.query] {
        tb.wait_serving("").await;
    }

    let mut ingest = IngestServiceClient::new(split.ingest.channel().await);
    for batch in 0..PUBLISHES {
        let events = (0..5)
            .map(|i| event("shutdown", batch * 5 + i, 3, test_minute()))
            .collect();
        let reply = ingest
            .publish(PublishRequest {
                events,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.accepted_count, 5);
    }
    let mut query = QueryServiceClient::new(split.query.channel().await);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = query
            .get_pipeline_stats(GetPipelineStatsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        if stats.processed == PUBLISHES * 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not processed within 20 s: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    split
}

/// Sends SIGTERM to the three at once; returns each one's exit status and
/// the time from the first SIGTERM to its exit, in the order ingest,
/// worker, query.
async fn sigterm_all(split: &mut Split) -> [(ExitStatus, Duration); 3] {
    let sent = Instant::now();
    for tb in [&split.ingest, &split.worker, &split.query] {
        tb.sigterm();
    }
    let (ingest, worker, query) = tokio::join!(
        exit_since(&mut split.ingest, sent),
        exit_since(&mut split.worker, sent),
        exit_since(&mut split.query, sent)
    );
    [ingest, worker, query]
}

/// Waits for `tb` to exit; returns its status and the time since `sent`.
async fn exit_since(tb: &mut Testbed, sent: Instant) -> (ExitStatus, Duration) {
    // Only so that a hang fails the test instead of stalling it; the bound
    // under test is asserted by the caller.
    let (status, _) = tb.wait_exit(Duration::from_secs(30)).await;
    (status, sent.elapsed())
}

/// Every process exited 0 within --shutdown-grace + --telemetry-flush-timeout
/// + [`SLACK`].
fn assert_exits_within_budget(exits: &[(ExitStatus, Duration); 3]) {
    for ((status, took), role) in exits.iter().zip(["ingest", "worker", "query"]) {
        eprintln!("{role}: {status} {took:?} after SIGTERM");
        assert_eq!(status.code(), Some(0), "{role}: {status}");
        assert!(
            *took <= GRACE + FLUSH + SLACK,
            "{role}: {took:?} from SIGTERM to exit, over {:?}",
            GRACE + FLUSH + SLACK
        );
    }
}

/// The process's last log line.
fn last_line(tb: &Testbed) -> String {
    tb.log()
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// The signals a "telemetry flushed (traces 2ms, metrics 0ms)" line names.
fn flushed(line: &str) -> Vec<String> {
    let Some((_, rest)) = line.split_once("telemetry flushed (") else {
        panic!("not a flushed line: {line}");
    };
    let list = rest.split_once(')').unwrap().0;
    list.split(", ")
        .map(|each| each.split(' ').next().unwrap().to_owned())
        .collect()
}

/// The signals a "telemetry not fully flushed" line reports as timed out.
fn timed_out(line: &str) -> String {
    assert!(
        line.contains(
            "WARN testbed_telemetry::flush: telemetry not fully flushed within 500ms, \
             unexported telemetry dropped: "
        ),
        "not a dropped-telemetry line: {line}"
    );
    let (_, rest) = line.split_once("timed_out=").unwrap();
    rest.split_whitespace().next().unwrap().to_owned()
}

fn service_name(resource: &Resource) -> Option<String> {
    resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

/// No OTLP endpoint: nothing to export; each process exits 0 within the
/// budget, its last line naming the providers it shut down (traces and
/// metrics; no logs provider without an endpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_collector_exit_is_within_budget() {
    let mut split = start_and_load(None).await;
    let exits = sigterm_all(&mut split).await;
    assert_exits_within_budget(&exits);
    for tb in [&split.ingest, &split.worker, &split.query] {
        assert_eq!(flushed(&last_line(tb)), ["traces", "metrics"]);
    }
}

/// A healthy receiver: every process exits 0 within the budget having
/// flushed all three signals, and what was held at SIGTERM arrived: nothing
/// had been exported before, then every Publish span (one per batch) and
/// metrics and logs of all three services came with the final flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_healthy_collector_everything_is_flushed_within_budget() {
    let (collector, endpoint) = start_collector().await;
    let mut split = start_and_load(Some(&endpoint)).await;
    {
        let got = collector.0.lock().unwrap();
        assert_eq!(
            (got.spans.len(), got.metrics.len(), got.logs),
            (0, 0, 0),
            "exported before SIGTERM"
        );
    }
    let exits = sigterm_all(&mut split).await;
    assert_exits_within_budget(&exits);
    for tb in [&split.ingest, &split.worker, &split.query] {
        assert_eq!(flushed(&last_line(tb)), ["traces", "metrics", "logs"]);
    }
    let got = collector.0.lock().unwrap();
    let publishes = got
        .spans
        .iter()
        .filter(|(r, s)| {
            s.name == "testbed.v1.IngestService/Publish"
                && service_name(r).as_deref() == Some("testbed-ingest")
        })
        .count();
    assert_eq!(publishes as u64, PUBLISHES);
    for service in ["testbed-ingest", "testbed-worker", "testbed-query"] {
        assert!(
            got.metrics
                .iter()
                .any(|(r, _, _)| service_name(r).as_deref() == Some(service)),
            "no metrics from {service}"
        );
    }
    assert!(got.logs > 0, "no log records");
}

/// The collector's port drops connection attempts (a NetworkPolicy that
/// drops packets): every process exits 0 within the budget instead of
/// waiting out the exporters' timeouts (15 s before #35), its last line
/// naming all three signals as timed out and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_dropping_port_exit_is_within_budget() {
    let port = DroppingPort::start();
    let mut split = start_and_load(Some(&port.endpoint)).await;
    let exits = sigterm_all(&mut split).await;
    assert_exits_within_budget(&exits);
    for tb in [&split.ingest, &split.worker, &split.query] {
        assert_eq!(timed_out(&last_line(tb)), "traces,metrics,logs");
    }
}

/// A collector that accepts connections and never answers: every process
/// exits 0 within the budget (10 s before #35), its last line naming all
/// three signals as timed out and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_silent_collector_exit_is_within_budget() {
    let collector = SilentCollector::start().await;
    let mut split = start_and_load(Some(&collector.endpoint)).await;
    let exits = sigterm_all(&mut split).await;
    assert_exits_within_budget(&exits);
    for tb in [&split.ingest, &split.worker, &split.query] {
        assert_eq!(timed_out(&last_line(tb)), "traces,metrics,logs");
    }
}
