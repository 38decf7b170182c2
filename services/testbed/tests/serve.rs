//! The `testbed` binary as users and kubelet see it: health, reflection,
//! graceful shutdown, and startup errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{Testbed, health_check};
use tokio_stream::StreamExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const ALL_SERVICES: [&str; 3] = [
    "testbed.v1.IngestService",
    "testbed.v1.WorkerControlService",
    "testbed.v1.QueryService",
];

/// Services reflection lists, through v1.
async fn list_services_v1(tb: &Testbed) -> BTreeSet<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut client = ServerReflectionClient::new(tb.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    match response.message_response.unwrap() {
        MessageResponse::ListServicesResponse(list) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer: {other:?}"),
    }
}

/// Services reflection lists through v1alpha, and whether it can describe
/// `symbol` (a file containing it comes back).
async fn list_and_describe_v1alpha(tb: &Testbed, symbol: &str) -> (BTreeSet<String>, bool) {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let mut client = ServerReflectionClient::new(tb.channel().await);
    let requests = [
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.to_owned())),
        },
    ];
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner()
        .map(|answer| answer.unwrap().message_response.unwrap());
    let services = match answers.next().await.unwrap() {
        MessageResponse::ListServicesResponse(list) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer: {other:?}"),
    };
    let described = match answers.next().await.unwrap() {
        MessageResponse::FileDescriptorResponse(files) => !files.file_descriptor_proto.is_empty(),
        _ => false,
    };
    (services, described)
}

fn expected(services: &[&str]) -> BTreeSet<String> {
    services
        .iter()
        .copied()
        .chain([
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ])
        .map(str::to_owned)
        .collect()
}

/// `testbed all` reports SERVING overall and for each of its three services.
#[tokio::test]
async fn all_reports_serving_for_every_service() {
    let tb = Testbed::start(&["all"]);
    tb.wait_serving("").await;
    let channel = tb.channel().await;
    for service in ALL_SERVICES {
        let status = health_check(channel.clone(), service).await.unwrap();
        assert_eq!(status, ServingStatus::Serving, "{service}");
    }
    let unknown = health_check(channel, "testbed.v1.Nope").await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

/// Reflection v1 and v1alpha both list exactly the served services, and
/// v1alpha describes google.rpc error details and well-known types.
#[tokio::test]
async fn reflection_v1_and_v1alpha_list_all_services() {
    let tb = Testbed::start(&["all"]);
    tb.wait_serving("").await;
    assert_eq!(list_services_v1(&tb).await, expected(&ALL_SERVICES));
    for symbol in [
        "google.rpc.BadRequest",
        "google.protobuf.Timestamp",
        "testbed.v1.Event",
    ] {
        let (services, described) = list_and_describe_v1alpha(&tb, symbol).await;
        assert_eq!(services, expected(&ALL_SERVICES));
        assert!(described, "v1alpha cannot describe {symbol}");
    }
}

/// Each single-service subcommand serves and advertises only its service.
#[tokio::test]
async fn single_service_subcommands_serve_their_own_service() {
    let redis = testbed_test_support::RedisServer::start();
    for (sub, service) in [
        ("ingest", "testbed.v1.IngestService"),
        ("worker", "testbed.v1.WorkerControlService"),
        ("query", "testbed.v1.QueryService"),
    ] {
        let tb = Testbed::start(&[sub, "--redis-url", &redis.url()]);
        tb.wait_serving(service).await;
        assert_eq!(list_services_v1(&tb).await, expected(&[service]), "{sub}");
    }
}

/// SIGTERM exits 0 promptly when nothing is in flight.
#[tokio::test]
async fn sigterm_exits_zero() {
    let mut tb = Testbed::start(&["all", "--shutdown-grace", "5s"]);
    tb.wait_serving("").await;
    tb.sigterm();
    let (status, took) = tb.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} with nothing in flight"
    );
}

/// With a stream open, SIGTERM turns every health status NOT_SERVING at
/// once, and the process still exits 0 when the grace period ends.
#[tokio::test]
async fn sigterm_reports_not_serving_then_exits_zero_within_grace() {
    let mut tb = Testbed::start(&["all", "--shutdown-grace", "1s"]);
    tb.wait_serving("").await;
    let mut health = HealthClient::new(tb.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "testbed.v1.IngestService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap().status();
    assert_eq!(first, ServingStatus::Serving);

    tb.sigterm();
    let next = watch.next().await.unwrap().unwrap().status();
    assert_eq!(next, ServingStatus::NotServing);
    let (status, took) = tb.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    // The open watch stream holds the drain until the grace period (1 s) ends.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// Runs `testbed <args>` to its end, asserting it exits with `code`; its
/// stderr.
fn exits_with(code: i32, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(args)
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
    stderr
}

/// A port already in use is a one-line error and a non-zero exit, not a panic.
#[test]
fn port_in_use_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let stderr = exits_with(1, &["all", "--grpc-addr", &addr]);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("testbed: cannot listen on --grpc-addr {addr}: ")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// An unparseable address is rejected by flag parsing with exit code 2.
#[test]
fn bad_address_exits_two() {
    let stderr = exits_with(2, &["all", "--grpc-addr", "not-an-address"]);
    assert!(stderr.contains("--grpc-addr"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `--version` names the version, git revision and architecture.
#[test]
fn version_names_revision_and_arch() {
    let output = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with(&format!("testbed {} (rev ", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(
        stdout.contains(std::env::consts::ARCH)
            || stdout.contains("amd64")
            || stdout.contains("arm64"),
        "{stdout}"
    );
}

/// Split-mode services refuse to start on the embedded log, with exit 2.
#[test]
fn split_services_need_redis() {
    for sub in ["ingest", "worker", "query"] {
        let stderr = exits_with(2, &[sub, "--grpc-addr", "127.0.0.1:0"]);
        assert!(stderr.contains("needs --redis-url"), "{sub}: {stderr}");
    }
}

/// `--cpu-class` would slow ingest and query too in `testbed all`: refused
/// with exit 2 and the reason, before anything starts, unless `normal`
/// (what `testbed all` runs at). An unknown class is a flag error.
#[tokio::test]
async fn cpu_class_is_for_the_worker_only() {
    let tb = Testbed::start(&["all", "--cpu-class", "normal"]);
    tb.wait_serving("").await;
    drop(tb);
    let stderr = exits_with(
        2,
        &["all", "--grpc-addr", "127.0.0.1:0", "--cpu-class", "idle"],
    );
    assert!(
        stderr.contains("--cpu-class applies to `testbed worker` only"),
        "{stderr}"
    );
    let stderr = exits_with(2, &["worker", "--cpu-class", "lowest"]);
    assert!(stderr.contains("--cpu-class"), "{stderr}");
}

/// With --max-connection-age, a connection holding an open PublishStream
/// is closed once it is that old plus the grace (so a long-lived stream
/// can move to a pod added since), and the next connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_connections_are_closed_under_their_streams() {
    use testbed_proto::v1::PublishStreamRequest;
    use testbed_proto::v1::ingest_service_client::IngestServiceClient;
    let tb = Testbed::start(&[
        "all",
        "--max-connection-age",
        "300ms",
        "--max-connection-age-grace",
        "300ms",
    ]);
    tb.wait_serving("testbed.v1.IngestService").await;
    let mut client = IngestServiceClient::new(tb.channel().await);
    // A stream whose request side stays open and idle.
    let (tx, rx) = tokio::sync::mpsc::channel::<PublishStreamRequest>(1);
    let started = std::time::Instant::now();
    let mut acks = client
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let end = tokio::time::timeout(Duration::from_secs(10), acks.next())
        .await
        .expect("the aged connection was closed within 10 s");
    assert!(!matches!(end, Some(Ok(_))), "no ack was asked for: {end:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before its age: {:?}",
        started.elapsed()
    );
    drop(tx);
    // A new connection is served as usual.
    let status = health_check(tb.channel().await, "").await.unwrap();
    assert_eq!(status, ServingStatus::Serving);
}
