//! The OpenTelemetry pipeline seen from a collector: an in-process OTLP
//! receiver (the collector's Trace/Metrics/Logs services from
//! `opentelemetry-proto`) receives what the real `testbed` binary exports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Testbed;
use common::otlp::start_collector;
use common::pipeline::{event, test_minute};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use testbed_proto::v1::PublishRequest;
use testbed_proto::v1::ingest_service_client::IngestServiceClient;

fn attr(resource: &Resource, key: &str) -> Option<String> {
    resource
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            other => Some(format!("{other:?}")),
        })
}

fn span_attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        })
}

fn otel_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_owned()),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100".to_owned()),
        ("POD_NAME", "testbed-0".to_owned()),
        ("POD_NAMESPACE", "experiments".to_owned()),
        ("NODE_NAME", "pi-node-3".to_owned()),
    ]
}

/// Publishes one batch under a caller trace context; returns the caller's
/// trace id and span id (hex).
async fn publish_traced(tb: &Testbed, run: &str) -> (String, String) {
    let trace_id = format!(
        "{:032x}",
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128 ^ run.len() as u128
    );
    let span_id = "00f067aa0ba902b7".to_owned();
    let mut request = tonic::Request::new(PublishRequest {
        events: (0..5).map(|i| event(run, i, 2, test_minute())).collect(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{span_id}-01").parse().unwrap(),
    );
    let reply = IngestServiceClient::new(tb.channel().await)
        .publish(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.accepted_count, 5);
    (trace_id, span_id)
}

async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Spans arrive with the resource attributes; one trace goes from the
/// caller through ingest, across Redis... here the embedded log, to the
/// worker (parent mode); RPC and domain metrics arrive by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_cross_the_queue_and_metrics_arrive() {
    let (collector, endpoint) = start_collector().await;
    let tb = Testbed::start_with_env(&["all"], &otel_env(&endpoint));
    tb.wait_serving("").await;
    let (trace_id, caller_span) = publish_traced(&tb, "otel").await;

    let received = collector.0.clone();
    let (server, resource) = wait_for("the ingest server span", || {
        let got = received.lock().unwrap();
        got.spans
            .iter()
            .find(|(_, s)| {
                hex(&s.trace_id) == trace_id && s.name == "testbed.v1.IngestService/Publish"
            })
            .map(|(r, s)| (s.clone(), r.clone()))
    })
    .await;
    assert_eq!(
        hex(&server.parent_span_id),
        caller_span,
        "the server span continues the caller"
    );
    assert_eq!(span_attr(&server, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        span_attr(&server, "rpc.service").as_deref(),
        Some("testbed.v1.IngestService")
    );
    assert_eq!(span_attr(&server, "rpc.method").as_deref(), Some("Publish"));
    assert_eq!(
        span_attr(&server, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    for (key, want) in [
        ("service.name", "testbed"),
        ("k8s.pod.name", "testbed-0"),
        ("k8s.namespace.name", "experiments"),
        ("k8s.node.name", "pi-node-3"),
    ] {
        assert_eq!(attr(&resource, key).as_deref(), Some(want), "{key}");
    }
    assert!(attr(&resource, "host.arch").is_some() && attr(&resource, "service.version").is_some());

    let worker = wait_for("the worker span of the same trace", || {
        let got = received.lock().unwrap();
        got.spans
            .iter()
            .find(|(_, s)| hex(&s.trace_id) == trace_id && s.name == "process entry")
            .map(|(_, s)| s.clone())
    })
    .await;
    assert_eq!(
        worker.parent_span_id, server.span_id,
        "parent mode: the worker span is a child of the ingest span"
    );

    wait_for("RPC and domain metrics", || {
        let got = received.lock().unwrap();
        let processed = got
            .metrics
            .iter()
            .filter(|(_, n, _)| n == "worker.events.processed")
            .map(|(_, _, v)| *v)
            .fold(0.0, f64::max);
        let rpc = got
            .metrics
            .iter()
            .any(|(_, n, _)| n == "rpc.server.duration");
        (processed >= 5.0 && rpc).then_some(())
    })
    .await;
    // Health and reflection calls are not traced.
    assert!(
        !received
            .lock()
            .unwrap()
            .spans
            .iter()
            .any(|(_, s)| s.name.starts_with("grpc.health"))
    );
}

/// In link mode the worker span starts its own trace, linked to the ingest span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_mode_links_instead_of_parenting() {
    let (collector, endpoint) = start_collector().await;
    let tb = Testbed::start_with_env(&["all", "--queue-trace-mode", "link"], &otel_env(&endpoint));
    tb.wait_serving("").await;
    let (trace_id, _) = publish_traced(&tb, "link-mode").await;
    let received = collector.0.clone();
    let server = wait_for("the ingest span", || {
        let got = received.lock().unwrap();
        got.spans
            .iter()
            .find(|(_, s)| hex(&s.trace_id) == trace_id && s.name.ends_with("/Publish"))
            .map(|(_, s)| s.clone())
    })
    .await;
    let worker = wait_for("a worker span linked to it", || {
        let got = received.lock().unwrap();
        got.spans
            .iter()
            .find(|(_, s)| {
                s.name == "process entry" && s.links.iter().any(|l| l.span_id == server.span_id)
            })
            .map(|(_, s)| s.clone())
    })
    .await;
    assert_ne!(
        hex(&worker.trace_id),
        trace_id,
        "link mode starts a new trace"
    );
}

/// A collector that accepts connections and never answers does not slow
/// the request path: 200 sequential publishes finish far below one export
/// timeout (5 s), measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_does_not_slow_requests() {
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", black_hole.local_addr().unwrap());
    let tb = Testbed::start_with_env(&["all"], &otel_env(&endpoint));
    tb.wait_serving("").await;
    let mut client = IngestServiceClient::new(tb.channel().await);
    let started = Instant::now();
    for i in 0..200 {
        let request = PublishRequest {
            events: vec![event("dead", i, 4, test_minute())],
            ..Default::default()
        };
        client.publish(request).await.unwrap();
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "200 publishes took {took:?} with a dead collector"
    );
    drop(black_hole);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One trace follows a simulated batch from the load generator
/// (`testbed-sim`) through ingest to the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_links_simulator_ingest_and_worker() {
    let (collector, endpoint) = start_collector().await;
    let tb = Testbed::start_with_env(&["all"], &otel_env(&endpoint));
    tb.wait_serving("").await;
    let target = format!("http://{}", tb.addr);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args([
            "sim",
            "--target",
            &target,
            "--rate",
            "100",
            "--duration",
            "1s",
            "--devices",
            "3",
        ])
        .envs(otel_env(&endpoint))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received = collector.0.clone();
    let (sim_service, chain) = wait_for("a sim -> ingest -> worker trace", || {
        let got = received.lock().unwrap();
        got.spans
            .iter()
            .filter(|(_, s)| s.name == "sim batch")
            .find_map(|(resource, sim)| {
                let ingest = got.spans.iter().find(|(_, s)| {
                    s.trace_id == sim.trace_id
                        && s.name == "publish batch"
                        && s.parent_span_id == sim.span_id
                })?;
                let worker = got.spans.iter().find(|(_, s)| {
                    s.trace_id == sim.trace_id
                        && s.name == "process entry"
                        && s.parent_span_id == ingest.1.span_id
                })?;
                Some((
                    attr(resource, "service.name"),
                    (ingest.1.name.clone(), worker.1.name.clone()),
                ))
            })
    })
    .await;
    assert_eq!(sim_service.as_deref(), Some("testbed-sim"));
    assert_eq!(
        chain,
        ("publish batch".to_owned(), "process entry".to_owned())
    );
    // The client side of the same calls is measured too.
    wait_for("rpc.client.duration from testbed-sim", || {
        let got = received.lock().unwrap();
        got.metrics
            .iter()
            .any(|(r, n, v)| {
                n == "rpc.client.duration"
                    && *v > 0.0
                    && attr(r, "service.name").as_deref() == Some("testbed-sim")
            })
            .then_some(())
    })
    .await;
}

/// With no OTLP endpoint at all, `/metrics` negotiated as OpenMetrics (what
/// Prometheus asks for) carries exemplars pointing to the caller's trace on
/// both the ingest RPC's duration buckets and the worker's end-to-end
/// latency buckets (the worker span continues the trace); the classic text
/// has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exemplars_point_to_the_trace() {
    let tb = Testbed::start(&["all"]);
    tb.wait_serving("").await;
    let (trace_id, _) = publish_traced(&tb, "exemplars").await;
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,\
        application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let exemplar = format!(" # {{trace_id=\"{trace_id}\",span_id=\"");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (content_type, text) = loop {
        let (content_type, text) = common::scrape(tb.metrics_addr, prometheus_accept).await;
        if text
            .lines()
            .any(|l| l.starts_with("pipeline_e2e_latency_seconds_bucket{") && l.contains(&exemplar))
        {
            break (content_type, text);
        }
        assert!(
            Instant::now() < deadline,
            "no e2e exemplar of {trace_id}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let publish: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("rpc_server_duration_seconds_bucket{")
                && l.contains("rpc_method=\"Publish\"")
                && l.contains(&exemplar)
        })
        .collect();
    assert_eq!(publish.len(), 1, "one Publish call, one exemplar:\n{text}");
    assert!(text.ends_with("\n# EOF\n") && text.matches("# EOF").count() == 1);
    assert!(text.contains("\n# TYPE worker_events_processed counter\n"));

    let (classic_type, classic) = common::scrape(tb.metrics_addr, "text/plain;version=0.0.4").await;
    assert_eq!(classic_type, "text/plain; version=0.0.4");
    assert!(classic.contains("pipeline_e2e_latency_seconds_bucket{"));
    assert!(!classic.contains(" # {") && !classic.contains("# EOF"));
}

/// JSON log lines written inside a request carry that request's trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_trace_ids() {
    let dir = std::env::temp_dir().join(format!("tb-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr_file = dir.join("addr.json");
    let log_file = std::fs::File::create(dir.join("out.log")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args([
            "--log-format",
            "json",
            "all",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--addr-file",
        ])
        .arg(&addr_file)
        .env("RUST_LOG", "info,testbed_ingest=debug")
        .stdout(log_file)
        .spawn()
        .unwrap();
    let addr = wait_for("the addr file", || {
        Some(testbed_server::addr_file::read(&addr_file)?.unwrap().grpc)
    })
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut request = tonic::Request::new(PublishRequest {
        events: vec![event("logs", 0, 1, test_minute())],
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    IngestServiceClient::new(channel)
        .publish(request)
        .await
        .unwrap();
    let line = wait_for("the publish log line", || {
        let text = std::fs::read_to_string(dir.join("out.log")).ok()?;
        text.lines()
            .find(|l| l.contains("batch published"))
            .map(str::to_owned)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["trace_id"], trace_id, "{line}");
    assert_eq!(json["span_id"].as_str().map(str::len), Some(16), "{line}");
    assert_eq!(json["level"], "DEBUG");
    let _ = std::fs::remove_dir_all(dir);
}
