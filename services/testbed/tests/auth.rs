//! Bearer-token authentication (#23, #34) on real processes: a `testbed
//! all` and a `testbed sim --serve` sharing one token file. Each service's
//! RPCs need their role (ingest write, query read, worker control read or
//! admin, simulator read or write); a missing or unknown token is
//! UNAUTHENTICATED, a known one below the role PERMISSION_DENIED, each
//! with its ErrorInfo reason; health and reflection answer without a
//! token; `testbed sim --token` publishes and verifies through them; the
//! simulator's audit line names the caller.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Testbed;
use common::pipeline::metric_now;
use common::sim::Sim;
use testbed_proto::v1::ingest_service_client::IngestServiceClient;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_proto::v1::run_spec::Load;
use testbed_proto::v1::simulator_service_client::SimulatorServiceClient;
use testbed_proto::v1::worker_control_service_client::WorkerControlServiceClient;
use testbed_proto::v1::{
    Event, GetPipelineStatsRequest, GetRunRequest, GetStatusRequest, PauseRequest, PublishRequest,
    RateLoad, ResumeRequest, RunSpec, RunState, StartRunRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
use tonic_types::StatusExt as _;

const READER: &str = "reader-secret-0123456789";
const WRITER: &str = "writer-secret-0123456789";
const ADMIN: &str = "admin-secret-0123456789ab";
const WRONG: &str = "wrong-secret-0123456789ab";

/// The token file both processes read.
/// A token file of its own per call: the tests run at once, and each
/// removes its file when done.
fn token_file() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("testbed-auth-{}-{n}.tokens", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "# name:role:secret\nci-reader:read:{READER}\nci-writer:write:{WRITER}\nops:admin:{ADMIN}\n"
        ),
    )
    .unwrap();
    path
}

/// `message` with `authorization: Bearer <token>` when `token` is given.
fn call<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// Asserts `status` is `code` with ErrorInfo `reason`.
fn refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, reason: &str, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, reason, "{what}: {info:?}");
    assert_eq!(info.domain, "testbed");
}

fn event(id: &str) -> Event {
    metric_now(id, "auth-dev")
}

async fn serving_without_token(channel: Channel, service: &str) {
    let status = common::health_check(channel, service).await.unwrap();
    assert_eq!(status, ServingStatus::Serving, "{service}");
}

/// Reflection lists the services without a token.
async fn reflection_open(channel: Channel) -> Vec<String> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("{other:?}"),
    }
}

/// Ingest, query and worker control of a `testbed all`: each role where
/// it belongs; health and reflection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_on_ingest_query_and_worker_control() {
    let tokens = token_file();
    let all = Testbed::start(&["all", "--auth-tokens-file", tokens.to_str().unwrap()]);
    all.wait_serving("testbed.v1.IngestService").await;
    let channel = all.channel().await;
    serving_without_token(channel.clone(), "").await;
    serving_without_token(channel.clone(), "testbed.v1.QueryService").await;
    let services = reflection_open(channel.clone()).await;
    assert!(
        services.iter().any(|s| s == "testbed.v1.IngestService"),
        "{services:?}"
    );

    let mut ingest = IngestServiceClient::new(channel.clone());
    let publish = |token| {
        call(
            PublishRequest {
                events: vec![event("auth-1")],
                ..Default::default()
            },
            token,
        )
    };
    refused(
        ingest.publish(publish(None)).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
        "publish, no token",
    );
    refused(
        ingest.publish(publish(Some(WRONG))).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
        "publish, wrong token",
    );
    refused(
        ingest.publish(publish(Some(READER))).await,
        Code::PermissionDenied,
        "ROLE_INSUFFICIENT",
        "publish, read token",
    );
    let accepted = ingest
        .publish(publish(Some(WRITER)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.accepted_count, 1, "{accepted:?}");
    // Admin includes write.
    ingest
        .publish(call(
            PublishRequest {
                events: vec![event("auth-2")],
                ..Default::default()
            },
            Some(ADMIN),
        ))
        .await
        .unwrap();

    let mut query = QueryServiceClient::new(channel.clone());
    let stats = |token| call(GetPipelineStatsRequest { window: None }, token);
    refused(
        query.get_pipeline_stats(stats(None)).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
        "query, no token",
    );
    refused(
        query.get_pipeline_stats(stats(Some(WRONG))).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
        "query, wrong token",
    );
    query.get_pipeline_stats(stats(Some(READER))).await.unwrap();

    let mut control = WorkerControlServiceClient::new(channel);
    control
        .get_status(call(GetStatusRequest::default(), Some(READER)))
        .await
        .unwrap();
    refused(
        control
            .get_status(call(GetStatusRequest::default(), None))
            .await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
        "status, no token",
    );
    let pause = |token| {
        call(
            PauseRequest {
                reason: "auth test".to_owned(),
            },
            token,
        )
    };
    refused(
        control.pause(pause(Some(WRITER))).await,
        Code::PermissionDenied,
        "ROLE_INSUFFICIENT",
        "pause, write token",
    );
    refused(
        control.pause(pause(None)).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
        "pause, no token",
    );
    control.pause(pause(Some(ADMIN))).await.unwrap();
    control
        .resume(call(ResumeRequest::default(), Some(ADMIN)))
        .await
        .unwrap();
    let _ = std::fs::remove_file(tokens);
}

/// The simulator service: StartRun needs write, GetRun read; its runs send
/// `--token` to an ingest that requires it, and complete; `testbed sim
/// --token --verify` publishes and verifies; the audit line names the
/// token and the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_roles_client_tokens_and_audit() {
    let tokens = token_file();
    let file = tokens.to_str().unwrap();
    let all = Testbed::start(&["all", "--auth-tokens-file", file]);
    all.wait_serving("testbed.v1.IngestService").await;
    let url = format!("http://{}", all.addr);
    let sim = Testbed::start_logged(
        &[
            "sim",
            "--serve",
            "--target",
            &url,
            "--auth-tokens-file",
            file,
        ],
        &[("TESTBED_TOKEN", WRITER.to_owned())],
    );
    sim.wait_serving("testbed.v1.SimulatorService").await;
    let channel = sim.channel().await;
    serving_without_token(channel.clone(), "testbed.v1.SimulatorService").await;
    reflection_open(channel.clone()).await;
    let mut client = SimulatorServiceClient::new(channel);
    let spec = || RunSpec {
        run_id: "auth-run".to_owned(),
        load: Some(Load::Rate(RateLoad {
            events_per_second: 100.0,
            duration: Some(Duration::from_secs(1).try_into().unwrap()),
        })),
        devices: 4,
        ..Default::default()
    };
    let start = |token| call(StartRunRequest { spec: Some(spec()) }, token);
    refused(
        client.start_run(start(None)).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
        "start, no token",
    );
    refused(
        client.start_run(start(Some(WRONG))).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
        "start, wrong token",
    );
    refused(
        client.start_run(start(Some(READER))).await,
        Code::PermissionDenied,
        "ROLE_INSUFFICIENT",
        "start, read token",
    );
    client.start_run(start(Some(WRITER))).await.unwrap();
    let get = || {
        call(
            GetRunRequest {
                run_id: "auth-run".to_owned(),
            },
            Some(READER),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = client
            .get_run(get())
            .await
            .unwrap()
            .into_inner()
            .run
            .unwrap();
        if run.state() != RunState::Running {
            break run;
        }
        assert!(Instant::now() < deadline, "{run:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run.state(), RunState::Completed, "{run:?}");
    assert_eq!(run.figures.unwrap().events_accepted, 100);
    refused(
        client
            .get_run(call(
                GetRunRequest {
                    run_id: "auth-run".to_owned(),
                },
                None,
            ))
            .await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
        "get, no token",
    );

    let log = sim.log();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("testbed::audit") || l.contains("sim StartRun"))
        .collect();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("ci-writer") && l.contains("auth-run") && l.contains("127.0.0.1:")),
        "no audit line naming the caller: {audit:#?}"
    );

    // The CLI: publishes with a write token, verifies with it through query.
    let finished = Sim::start(
        "auth-cli",
        &[
            "--target",
            &url,
            "--rate",
            "200",
            "--duration",
            "1s",
            "--token",
            WRITER,
        ],
    )
    .finish(Duration::from_secs(60))
    .await;
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    // Without a token every batch is refused.
    let finished = Sim::start(
        "auth-cli-none",
        &[
            "--target",
            &url,
            "--rate",
            "50",
            "--duration",
            "1s",
            "--max-retries",
            "0",
        ],
    )
    .finish(Duration::from_secs(60))
    .await;
    assert_ne!(finished.code, Some(0), "{}", finished.stderr);
    let _ = std::fs::remove_file(tokens);
}

/// A token file that breaks a rule stops the start (exit 1) with one line
/// naming the file and the line, never the secret.
#[test]
fn a_bad_token_file_refuses_to_start() {
    let path = std::env::temp_dir().join(format!("testbed-auth-bad-{}.tokens", std::process::id()));
    std::fs::write(
        &path,
        format!("ok:read:{READER}\nweak:write:short-secret\n"),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args([
            "all",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--auth-tokens-file")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("testbed: "))
        .expect("a one-line error");
    assert!(
        line.contains("token line 2") && line.contains("\"weak\""),
        "{line}"
    );
    assert!(!stderr.contains("short-secret"), "{stderr}");
}
