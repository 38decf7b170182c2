//! The guard of `testbed sim --serve` (#34): runs may target only the
//! allow-list (checked again after DNS resolution) and stay within the
//! caps; refusals carry their code and details, and no connection reaches
//! a refused target. Real processes on loopback: a `testbed all` as the
//! allowed ingest, and a plain TCP listener as the address nobody allowed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Testbed;
use common::sim_api::{Client, get, start};
use testbed_proto::v1::simulator_service_client::SimulatorServiceClient;
use testbed_proto::v1::update_run_request::Change;
use testbed_proto::v1::{
    RateLoad, RunSpec, RunState, StopRunRequest, UpdateRunRequest, run_spec::Load,
};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// A TCP listener that counts the connections it accepts: the `OTHER`
/// address of the issue, which nothing may reach.
struct Counter {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Counter {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        // Detached: it blocks in accept for the test process's lifetime.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stream.is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A `testbed all` as the configured target, and a simulator server
/// pointed at it with `extra` flags.
async fn setup(extra: &[&str]) -> (Testbed, Testbed, Client) {
    let ingest = Testbed::start(&["all"]);
    ingest.wait_serving("testbed.v1.IngestService").await;
    let (sim, client) = sim_for(&ingest, extra).await;
    (ingest, sim, client)
}

/// A simulator server with `--target` the `testbed all` `ingest`.
async fn sim_for(ingest: &Testbed, extra: &[&str]) -> (Testbed, Client) {
    let url = format!("http://{}", ingest.addr);
    let mut args = vec!["sim", "--serve", "--target", &url];
    args.extend_from_slice(extra);
    let sim = Testbed::start(&args);
    sim.wait_serving("testbed.v1.SimulatorService").await;
    let client = SimulatorServiceClient::new(sim.channel().await);
    (sim, client)
}

fn spec(target: &str, rate: f64, duration: Option<f64>) -> RunSpec {
    RunSpec {
        target: target.to_owned(),
        load: Some(Load::Rate(RateLoad {
            events_per_second: rate,
            duration: duration.map(|d| Duration::from_secs_f64(d).try_into().unwrap()),
        })),
        devices: 8,
        ..Default::default()
    }
}

fn assert_not_allowed(status: &Status, target: &str) -> std::collections::HashMap<String, String> {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "TARGET_NOT_ALLOWED", "{info:?}");
    assert_eq!(info.domain, "testbed.v1.SimulatorService");
    assert_eq!(info.metadata["target"], target);
    assert_eq!(info.metadata["field"], "spec.target");
    info.metadata.clone()
}

/// The field and description of an INVALID_ARGUMENT's one BadRequest
/// violation.
fn violation(status: &Status) -> (String, String) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad = status.get_details_bad_request().expect("BadRequest");
    assert_eq!(bad.field_violations.len(), 1, "{bad:?}");
    let v = &bad.field_violations[0];
    (v.field.clone(), v.description.clone())
}

/// The call: a run aimed at an address nobody allowed, at a
/// million events/s, is PERMISSION_DENIED (before its rate is even
/// looked at), and no connection reaches that address; a literal address
/// on another port of the allowed host is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disallowed_target_is_refused_and_never_connected() {
    let other = Counter::start();
    let (ingest, _sim, mut client) = setup(&[]).await;
    let target = format!("http://127.0.0.1:{}", other.port);
    let err = start(&mut client, spec(&target, 1_000_000.0, Some(5.0)))
        .await
        .unwrap_err();
    let metadata = assert_not_allowed(&err, &target);
    assert!(!metadata.contains_key("address"), "{metadata:?}");
    // The same host as the allowed target, another port.
    let next_port = format!("http://127.0.0.1:{}", ingest.addr.port() ^ 1);
    let err = start(&mut client, spec(&next_port, 10.0, Some(1.0)))
        .await
        .unwrap_err();
    assert_not_allowed(&err, &next_port);
    // A dns:/// form of it too.
    let dns = format!("dns:///127.0.0.1:{}", other.port);
    let err = start(&mut client, spec(&dns, 10.0, Some(1.0)))
        .await
        .unwrap_err();
    assert_not_allowed(&err, &dns);
    // Whatever a lazy channel might have done, it would have by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(other.accepted(), 0, "a refused target was connected to");
}

/// A name nobody listed is resolved, and refused because an address it
/// resolves to is not allowed: the refusal names that address. A name
/// whose every address is allowed passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_a_disallowed_address_is_refused() {
    let other = Counter::start();
    let (ingest, _sim, mut client) = setup(&[]).await;
    let target = format!("http://localhost:{}", other.port);
    let err = start(&mut client, spec(&target, 10.0, Some(1.0)))
        .await
        .unwrap_err();
    let metadata = assert_not_allowed(&err, &target);
    let address = &metadata["address"];
    assert!(
        address.ends_with(&format!(":{}", other.port)),
        "{metadata:?}"
    );
    assert!(err.message().contains(address.as_str()), "{err:?}");
    assert_eq!(other.accepted(), 0);

    // localhost on the allowed port: every address it resolves to
    // (127.0.0.1, and ::1 where it has one, listed here) is allowed.
    let port = ingest.addr.port();
    let (_sim2, mut client2) = sim_for(&ingest, &[&format!("--allow-target=[::1]:{port}")]).await;
    let by_address = format!("http://localhost:{port}");
    let run = start(&mut client2, spec(&by_address, 10.0, Some(0.5)))
        .await
        .unwrap();
    assert_eq!(run.state(), RunState::Running);
}

/// `--allow-target` adds CIDRs and host:port entries; an allowed run
/// completes with every event accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_run_completes() {
    let ingest = Testbed::start(&["all"]);
    ingest.wait_serving("testbed.v1.IngestService").await;
    let port = ingest.addr.port();
    // The configured target is elsewhere: the run is allowed by the CIDR.
    let sim = Testbed::start(&[
        "sim",
        "--serve",
        "--target",
        "http://127.0.0.1:1",
        "--allow-target",
        &format!("127.0.0.0/8:{port}"),
    ]);
    sim.wait_serving("testbed.v1.SimulatorService").await;
    let mut client = SimulatorServiceClient::new(sim.channel().await);
    let target = format!("http://127.0.0.1:{port}");
    let mut run_spec = spec(&target, 200.0, Some(1.0));
    run_spec.run_id = "allowed-1".to_owned();
    start(&mut client, run_spec).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = get(&mut client, "allowed-1").await.unwrap();
        if run.state() != RunState::Running {
            break run;
        }
        assert!(Instant::now() < deadline, "not ended: {run:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run.state(), RunState::Completed, "{run:?}");
    let figures = run.figures.unwrap();
    assert_eq!(figures.events_sent, 200, "{figures:?}");
    assert_eq!(figures.events_accepted, 200, "{figures:?}");
}

/// Over the per-run caps: rate, duration and connections are
/// INVALID_ARGUMENT naming the field and the cap; over the total rate of
/// the active runs (StartRun and UpdateRun) is RESOURCE_EXHAUSTED with a
/// QuotaFailure naming the field, ErrorInfo naming the cap and a retry
/// delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_name_the_field_and_the_cap() {
    let (ingest, _sim, mut client) = setup(&[
        "--max-rate",
        "1000",
        "--max-total-rate",
        "1500",
        "--max-run-duration",
        "10s",
        "--retry-after",
        "3s",
    ])
    .await;
    let err = start(&mut client, spec("", 1001.0, Some(1.0)))
        .await
        .unwrap_err();
    let (field, why) = violation(&err);
    assert_eq!(field, "spec.rate.events_per_second");
    assert!(why.contains("1000") && why.contains("--max-rate"), "{why}");

    let err = start(&mut client, spec("", 10.0, Some(11.0)))
        .await
        .unwrap_err();
    let (field, why) = violation(&err);
    assert_eq!(field, "spec.rate.duration");
    assert!(
        why.contains("10s") && why.contains("--max-run-duration"),
        "{why}"
    );

    // Total rate: 1000 running, 600 more is over 1500.
    let mut first = spec("", 1000.0, None);
    first.run_id = "total-1".to_owned();
    let run = start(&mut client, first).await.unwrap();
    assert_eq!(run.state(), RunState::Running);
    let err = start(&mut client, spec("", 600.0, Some(1.0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let quota = err.get_details_quota_failure().expect("QuotaFailure");
    assert_eq!(quota.violations[0].subject, "spec.rate.events_per_second");
    let info = err.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "TOTAL_RATE_EXCEEDED");
    assert_eq!(info.metadata["cap"], "--max-total-rate");
    assert_eq!(info.metadata["max"], "1500");
    assert_eq!(
        err.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(3))
    );
    // 500 fits.
    let mut second = spec("", 500.0, None);
    second.run_id = "total-2".to_owned();
    start(&mut client, second).await.unwrap();
    // UpdateRun is held to the same total: 1000 + 501 is over.
    let err = client
        .update_run(UpdateRunRequest {
            run_id: "total-2".to_owned(),
            change: Some(Change::EventsPerSecond(501.0)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.get_details_quota_failure().unwrap().violations[0].subject,
        "events_per_second"
    );
    // A stopped run no longer counts.
    client
        .stop_run(StopRunRequest {
            run_id: "total-1".to_owned(),
        })
        .await
        .unwrap();
    client
        .update_run(UpdateRunRequest {
            run_id: "total-2".to_owned(),
            change: Some(Change::EventsPerSecond(1000.0)),
        })
        .await
        .unwrap();
    drop(ingest);
}

/// A run "until stopped" ends (COMPLETED) at --max-run-duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_run_ends_at_the_longest_duration() {
    let (_ingest, _sim, mut client) = setup(&["--max-run-duration", "1s"]).await;
    let mut open = spec("", 50.0, None);
    open.run_id = "open-capped".to_owned();
    start(&mut client, open).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = get(&mut client, "open-capped").await.unwrap();
        if run.state() != RunState::Running {
            break run;
        }
        assert!(Instant::now() < deadline, "still running: {run:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run.state(), RunState::Completed, "{run:?}");
    assert_eq!(run.figures.unwrap().events_sent, 50);
}

/// Connections per run: --connections times the addresses of the target,
/// at most --max-run-connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_run_are_capped() {
    let (_ingest, _sim, mut client) =
        setup(&["--connections", "4", "--max-run-connections", "3"]).await;
    let err = start(&mut client, spec("", 10.0, Some(1.0)))
        .await
        .unwrap_err();
    let (field, why) = violation(&err);
    assert_eq!(field, "spec.target");
    assert!(
        why.contains("--max-run-connections") && why.contains("4 connections"),
        "{why}"
    );
}
