//! The live status page on the metrics port of a real `testbed all`: its
//! JSON and HTML show health per service and the pipeline's figures, read
//! from the process's own gRPC API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Testbed;
use common::pipeline::{event, test_minute};
use testbed_proto::v1::PublishRequest;
use testbed_proto::v1::ingest_service_client::IngestServiceClient;

/// The rows of the section titled `title`, as strings.
fn rows(page: &serde_json::Value, title: &str) -> Vec<Vec<String>> {
    let section = page["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["title"] == title)
        .unwrap_or_else(|| panic!("no section {title}: {page}"));
    serde_json::from_value(section["rows"].clone()).unwrap()
}

/// After 6 events are published and processed, /status.json shows role
/// `all`, every service SERVING, 6 appended and 6 processed, one RUNNING
/// worker and a backlog of 0 on each of the 4 partitions; / renders the
/// same as a self-refreshing HTML page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_health_and_pipeline_figures() {
    let tb = Testbed::start(&["all"]);
    tb.wait_serving("").await;
    let reply = IngestServiceClient::new(tb.channel().await)
        .publish(PublishRequest {
            events: (0..6)
                .map(|i| event("status", i, 3, test_minute()))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.accepted_count, 6);

    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let (head, body) = common::http_get(tb.metrics_addr, "/status.json").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        if rows(&page, "Throughput per stage")[1][1] == "6" {
            break page;
        }
        assert!(Instant::now() < deadline, "never processed: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(page["role"], "all");
    assert_eq!(
        page["health"],
        serde_json::json!([
            ["", "SERVING"],
            ["testbed.v1.IngestService", "SERVING"],
            ["testbed.v1.WorkerControlService", "SERVING"],
            ["testbed.v1.QueryService", "SERVING"],
        ])
    );
    let stages = rows(&page, "Throughput per stage");
    assert_eq!(
        (stages[0][0].as_str(), stages[0][1].as_str()),
        ("ingest (appended)", "6")
    );
    let workers = rows(&page, "Workers");
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0][1], "RUNNING");
    let partitions = rows(&page, "Backlog per partition");
    assert_eq!(
        partitions
            .iter()
            .map(|p| (p[0].as_str(), p[1].as_str()))
            .collect::<Vec<_>>(),
        [("0", "0"), ("1", "0"), ("2", "0"), ("3", "0")]
    );

    let (head, html) = common::http_get(tb.metrics_addr, "/").await;
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(html.contains(r#"<meta http-equiv="refresh" content="2"/>"#));
    assert!(html.contains(r#"<span id="role">all</span>"#));
    assert!(html.contains(r#"<td class="k">ingest (appended)</td><td class="n">6</td>"#));
}

/// With TLS on the gRPC port the page asks health on the plaintext
/// `--probe-addr` listener (every service SERVING) and says why the
/// pipeline is not shown, instead of reporting the services unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_health_comes_from_the_probe_port() {
    use common::tls::{Ca, Files};
    let files = Files::new("status-tls");
    let leaf = Ca::new("status-ca").leaf("all");
    let tb = Testbed::start(&[
        "all",
        "--tls-cert",
        files.write("c.pem", &leaf.cert).to_str().unwrap(),
        "--tls-key",
        files.write("k.pem", &leaf.key).to_str().unwrap(),
        "--probe-addr",
        "127.0.0.1:0",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let (head, body) = common::http_get(tb.metrics_addr, "/status.json").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        if page["health"][0][1] == "SERVING" {
            break page;
        }
        assert!(Instant::now() < deadline, "never SERVING: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let health = page["health"].as_array().unwrap();
    assert_eq!(health.len(), 4, "{page}");
    assert!(health.iter().all(|h| h[1] == "SERVING"), "{page}");
    let sections = page["sections"].as_array().unwrap();
    assert_eq!(sections.len(), 1, "{page}");
    assert!(
        sections[0]["note"].as_str().unwrap().contains("TLS only"),
        "{page}"
    );
}
