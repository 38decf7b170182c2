//! `testbed sim --verify` end to end on a real pipeline (Redis): it passes
//! when every accepted event is processed once, and fails loudly when
//! events are dropped on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Testbed;
use common::sim::sum;
use testbed_proto::v1::worker_control_service_client::WorkerControlServiceClient;
use testbed_proto::v1::{FailureFault, Fault, FaultScope, InjectFaultRequest, fault::Effect};
use testbed_test_support::RedisServer;

fn pipeline(redis: &RedisServer) -> Testbed {
    let url = redis.url();
    Testbed::start(&[
        "all",
        "--redis-url",
        &url,
        "--claim-idle",
        "200ms",
        "--maintenance-interval",
        "100ms",
        "--read-block",
        "100ms",
        "--max-deliveries",
        "1",
        "--control-interval",
        "100ms",
    ])
}

async fn sim(
    tb: &Testbed,
    run_id: &str,
    extra: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let target = format!("http://{}", tb.addr);
    common::sim::run_to_end(
        &format!("verify-{run_id}"),
        &[
            "--target",
            &target,
            "--rate",
            "400",
            "--duration",
            "1s",
            "--devices",
            "8",
            "--run-id",
            run_id,
            "--verify",
            "--verify-timeout",
            "20s",
        ],
        "json",
        extra,
    )
    .await
}

/// Every accepted event processed exactly once: exit 0, verification passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_a_healthy_pipeline() {
    let redis = RedisServer::start();
    let tb = pipeline(&redis);
    tb.wait_serving("testbed.v1.QueryService").await;
    // Deduplicated by producer sequence (the default), then by event id.
    for dedupe in ["sequence", "event-id"] {
        let run_id = format!("healthy-run-{dedupe}");
        let (output, report) = sim(&tb, &run_id, &["--dedupe", dedupe]).await;
        assert!(
            output.status.success(),
            "{dedupe}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let v = &report["verification"];
        assert_eq!(v["passed"], true, "{dedupe}: {v}");
        let accepted = report["total"]["accepted"].as_u64().unwrap();
        assert_eq!(accepted, 400);
        let processed: u64 = sum(&v["processed"]);
        assert_eq!(processed, accepted);
        assert_eq!(v["expected"], v["processed"]);
    }
}

/// Events dead-lettered on purpose (a failure fault on one device): the
/// run exits non-zero with a per-kind diff that names them dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_loudly_when_events_are_dropped() {
    let redis = RedisServer::start();
    let tb = pipeline(&redis);
    tb.wait_serving("testbed.v1.WorkerControlService").await;
    let mut control = WorkerControlServiceClient::new(tb.channel().await);
    control
        .inject_fault(InjectFaultRequest {
            fault: Some(Fault {
                scope: Some(FaultScope {
                    device_prefix: "sim-00003".into(),
                    payload_kind: 0,
                }),
                effect: Some(Effect::Failure(FailureFault { ratio: 1.0 })),
                ..Default::default()
            }),
            ttl: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
        })
        .await
        .unwrap();
    let (output, report) = sim(&tb, "dropping-run", &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("verification FAILED"), "{stderr}");
    let v = &report["verification"];
    assert_eq!(v["passed"], false);
    let expected: u64 = sum(&v["expected"]);
    let processed: u64 = sum(&v["processed"]);
    assert_eq!(expected, 400);
    // Device 3 gets one event in eight; the fault fails whole entries (one
    // batch's events of one partition) once the worker has picked it up
    // (within its control interval), so some 50 events are lost.
    assert!(processed < expected && processed >= 300, "{v}");
    let diff: Vec<&str> = v["diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        diff.iter().any(|d| d.starts_with("gpu: processed")),
        "{diff:?}"
    );
    // Named as dead-lettered, not as lost.
    assert!(
        diff.iter().any(|d| d.starts_with(&format!(
            "all {} were dead-lettered, not lost",
            expected - processed
        ))),
        "{diff:?}"
    );
    // The run's ledger says where they went.
    assert_eq!(
        v["dead_lettered"].as_u64(),
        Some(expected - processed),
        "{v}"
    );
}

/// A `dns:///` target balances over what the name resolves to (here
/// localhost) and delivers every event, with streams recycled every 300 ms
/// (cleanly: nothing is re-sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_targets_deliver_every_event() {
    let tb = Testbed::start(&["all"]);
    tb.wait_serving("").await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args([
            "sim",
            "--target",
            &format!("dns:///localhost:{}", tb.addr.port()),
        ])
        .args(["--query-target", &format!("http://{}", tb.addr)])
        .args([
            "--rate",
            "200",
            "--duration",
            "2s",
            "--verify",
            "--verify-timeout",
            "20s",
            "--stream-max-age",
            "300ms",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("verify   PASSED: 400 events processed exactly once"),
        "{stdout}"
    );
    assert!(stdout.contains("retried batches 0"), "{stdout}");
}
