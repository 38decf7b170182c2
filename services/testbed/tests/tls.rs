//! TLS and mTLS (#23) on real `testbed all` processes, with certificates
//! made by the test (rcgen): TLS clients served, plaintext and untrusting
//! clients refused in the handshake, client certificates required and
//! checked, tokens over TLS, the plaintext health-only probe port, the
//! handshake under --handshake-timeout, certificate rotation by rewriting
//! the files, and bad files refused at start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Testbed;
use common::pipeline::metric_now;
use common::tls::{
    Ca, Files, Leaf, client_tls, connect, handshake, health, metric, presented, wait_metric,
    wait_serving,
};
use testbed_proto::v1::PublishRequest;
use testbed_proto::v1::ingest_service_client::IngestServiceClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const FAILURES: &str = "server_tls_handshake_failures_total";
const RELOADS: &str = "server_tls_reloads_total";

fn publish_request(id: &str, token: Option<&str>) -> Request<PublishRequest> {
    let mut request = Request::new(PublishRequest {
        events: vec![metric_now(id, "tls-dev")],
        ..Default::default()
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// `testbed all` serving TLS with `leaf` (written to `c.pem` and `k.pem`
/// in `files`), plus `extra` flags.
fn start_tls(files: &Files, leaf: &Leaf, extra: &[&str]) -> Testbed {
    let (cert, key) = (
        files.write("c.pem", &leaf.cert),
        files.write("k.pem", &leaf.key),
    );
    let mut args = vec![
        "all",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Testbed::start(&args)
}

/// The TLS test `name`'s files, its CA (`<name>-ca`) and the server's leaf.
fn material(name: &str) -> (Files, Ca, Leaf) {
    let files = Files::new(name);
    let ca = Ca::new(&format!("{name}-ca"));
    let leaf = ca.leaf("server");
    (files, ca, leaf)
}

/// [`start_tls`], waited on until it serves clients that trust `ca`.
async fn serving_tls(files: &Files, leaf: &Leaf, ca: &Ca, extra: &[&str]) -> Testbed {
    let all = start_tls(files, leaf, extra);
    wait_serving(all.addr, &client_tls(&ca.pem(), None)).await;
    all
}

/// Publishes one event on `channel`; the accepted count or the status code.
async fn publish(channel: Channel, id: &str, token: Option<&str>) -> Result<u32, Code> {
    IngestServiceClient::new(channel)
        .publish(publish_request(id, token))
        .await
        .map(|r| r.into_inner().accepted_count)
        .map_err(|s| s.code())
}

/// Waits for `name{reason}` to reach `expected`, then checks it is exactly
/// that (nothing else failed a handshake).
async fn assert_failures(all: &Testbed, reason: &str, expected: f64) {
    let having = format!("reason=\"{reason}\"");
    wait_metric(all.metrics_addr, FAILURES, &having, expected).await;
    assert_eq!(
        metric(all.metrics_addr, FAILURES, &having).await,
        expected,
        "{reason}"
    );
}

/// A TLS server serves a TLS client (health, Publish), refuses a plaintext
/// client and a client that does not trust its CA, and counts each refusal
/// by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_tls_clients_and_refuses_plaintext_and_untrusting_ones() {
    let (files, ca, leaf) = material("basic");
    let all = serving_tls(&files, &leaf, &ca, &[]).await;
    let tls = client_tls(&ca.pem(), None);

    let channel = connect(all.addr, tls.clone()).await.unwrap();
    assert_eq!(publish(channel, "tls-1", None).await, Ok(1));
    assert_eq!(presented(all.addr, &ca.pem()).await, Ok(leaf.der.clone()));

    // Plaintext HTTP/2 (the preface and SETTINGS) is not a TLS record: the
    // server closes the connection without an HTTP/2 answer.
    let mut plain = tokio::net::TcpStream::connect(all.addr).await.unwrap();
    plain
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer))
        .await
        .expect("the server closes a plaintext connection");
    // At most a TLS alert record (content type 21), never HTTP/2 SETTINGS.
    assert!(
        answer.is_empty() || answer[0] == 21,
        "not refused in TLS: {answer:?}"
    );
    assert_failures(&all, "not_tls", 1.0).await;
    let plaintext = Channel::from_shared(format!("http://{}", all.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await;
        assert!(status.is_err(), "plaintext health answered: {status:?}");
    }

    // A client trusting another CA gives up on the server's certificate.
    let other = Ca::new("other-ca");
    let refused = presented(all.addr, &other.pem()).await.unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    assert_failures(&all, "rejected_by_client", 1.0).await;
    let refused = health(all.addr, client_tls(&other.pem(), None), "").await;
    assert!(refused.is_err(), "{refused:?}");
}

/// With --tls-client-ca, a client with a certificate of that CA is served;
/// one without a certificate and one whose certificate another CA signed
/// are refused in the handshake, each counted by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_client_certificate_of_the_client_ca() {
    let files = Files::new("mtls");
    let server_ca = Ca::new("server-ca");
    let client_ca = Ca::new("client-ca");
    let leaf = server_ca.leaf("server");
    let client_ca_file = files.write("ca.pem", &client_ca.pem());
    let all = start_tls(
        &files,
        &leaf,
        &["--tls-client-ca", client_ca_file.to_str().unwrap()],
    );
    let client = client_ca.leaf("client");
    let good = client_tls(&server_ca.pem(), Some(&client));
    wait_serving(all.addr, &good).await;
    let channel = connect(all.addr, good).await.unwrap();
    assert_eq!(publish(channel, "mtls-1", None).await, Ok(1));

    assert_eq!(
        handshake(all.addr, &server_ca.pem(), Some(&client)).await,
        Ok(leaf.der.clone())
    );

    let anonymous = handshake(all.addr, &server_ca.pem(), None).await;
    assert!(
        anonymous.is_err(),
        "served without a client certificate: {anonymous:?}"
    );
    assert_failures(&all, "no_client_certificate", 1.0).await;
    let stranger = Ca::new("stranger-ca").leaf("client");
    let refused = handshake(all.addr, &server_ca.pem(), Some(&stranger)).await;
    assert!(refused.is_err(), "served another CA's client: {refused:?}");
    assert_failures(&all, "bad_client_certificate", 1.0).await;

    // The same through tonic clients (which may reconnect, so not counted).
    let anonymous = health(all.addr, client_tls(&server_ca.pem(), None), "").await;
    assert!(
        anonymous.is_err(),
        "served without a client certificate: {anonymous:?}"
    );
    let refused = health(all.addr, client_tls(&server_ca.pem(), Some(&stranger)), "").await;
    assert!(refused.is_err(), "served another CA's client: {refused:?}");
}

/// Tokens over TLS: a good token publishes, a bad one is UNAUTHENTICATED,
/// health answers without one; the --probe-addr port answers health in
/// plaintext and serves nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_over_tls_and_the_plaintext_probe_port() {
    let (files, ca, leaf) = material("tokens");
    let secret = "writer-secret-0123456789";
    let tokens = files.write("tokens", &format!("ci-writer:write:{secret}\n"));
    let all = serving_tls(
        &files,
        &leaf,
        &ca,
        &[
            "--auth-tokens-file",
            tokens.to_str().unwrap(),
            "--probe-addr",
            "127.0.0.1:0",
        ],
    )
    .await;
    let tls = client_tls(&ca.pem(), None);
    let channel = connect(all.addr, tls.clone()).await.unwrap();
    assert_eq!(publish(channel.clone(), "tok-1", Some(secret)).await, Ok(1));
    assert_eq!(
        publish(channel.clone(), "tok-2", Some("wrong-secret-0123456789ab")).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        publish(channel, "tok-3", None).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        health(all.addr, tls, "testbed.v1.IngestService").await,
        Ok(ServingStatus::Serving)
    );

    let probe = all.probe_addr.expect("the probe address in --addr-file");
    let plain = Channel::from_shared(format!("http://{probe}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for service in ["", "testbed.v1.IngestService", "testbed.v1.QueryService"] {
        let status = common::health_check(plain.clone(), service).await.unwrap();
        assert_eq!(
            status,
            ServingStatus::Serving,
            "{service:?} on the probe port"
        );
    }
    assert_eq!(
        publish(plain, "tok-4", Some(secret)).await,
        Err(Code::Unimplemented),
        "the probe port serves health only"
    );
}

/// A client that opens TCP and never starts TLS is closed at
/// --handshake-timeout, counted as a handshake timeout and a TLS failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_clients_are_closed_at_the_handshake_timeout() {
    let (files, ca, leaf) = material("silent");
    let all = serving_tls(&files, &leaf, &ca, &["--handshake-timeout", "300ms"]).await;
    let start = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(all.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed by the server");
    let waited = start.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    assert_failures(&all, "timeout", 1.0).await;
    assert_eq!(
        metric(
            all.metrics_addr,
            "server_connections_closed_total",
            "reason=\"handshake_timeout\""
        )
        .await,
        1.0
    );
}

/// Rewriting the certificate and key files (another CA, as a rotation to a
/// new issuer) reaches new connections without a restart; a garbage
/// replacement is refused and the last good certificate stays in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_reach_new_connections_and_garbage_is_refused() {
    let files = Files::new("rotate");
    let (old_ca, new_ca) = (Ca::new("old-ca"), Ca::new("new-ca"));
    let (old, new) = (old_ca.leaf("server-old"), new_ca.leaf("server-new"));
    let all = start_tls(&files, &old, &["--tls-reload-interval", "100ms"]);
    wait_serving(all.addr, &client_tls(&old_ca.pem(), None)).await;
    assert_eq!(
        presented(all.addr, &old_ca.pem()).await,
        Ok(old.der.clone())
    );
    // Open before the rotation: keeps working on its old certificate.
    let before = connect(all.addr, client_tls(&old_ca.pem(), None))
        .await
        .unwrap();

    // Each file replaced atomically, as Kubernetes' symlink swap does; the
    // pair may be seen half-rotated once (refused, then loaded).
    let replace = |name: &str, text: &str| {
        let tmp = files.write(&format!("{name}.tmp"), text);
        std::fs::rename(tmp, files.dir.join(name)).unwrap();
    };
    replace("k.pem", &new.key);
    replace("c.pem", &new.cert);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if presented(all.addr, &new_ca.pem()).await == Ok(new.der.clone()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate never showed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(all.metrics_addr, RELOADS, "result=\"ok\"").await,
        1.0
    );
    assert_eq!(
        health(all.addr, client_tls(&new_ca.pem(), None), "").await,
        Ok(ServingStatus::Serving)
    );
    assert!(
        presented(all.addr, &old_ca.pem()).await.is_err(),
        "old certificate still served"
    );
    assert_eq!(publish(before, "rot-1", None).await, Ok(1));

    let refused = metric(all.metrics_addr, RELOADS, "result=\"error\"").await;
    replace(
        "c.pem",
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    );
    wait_metric(all.metrics_addr, RELOADS, "result=\"error\"", refused + 1.0).await;
    assert_eq!(
        presented(all.addr, &new_ca.pem()).await,
        Ok(new.der.clone())
    );
    assert_eq!(
        metric(all.metrics_addr, RELOADS, "result=\"ok\"").await,
        1.0
    );
}

/// Unreadable TLS files and a key that is not the certificate's stop the
/// process before it listens: exit 1 and one line naming the flag and file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_stop_the_process_with_one_line() {
    let files = Files::new("bad");
    let ca = Ca::new("bad-ca");
    let (a, b) = (ca.leaf("a"), ca.leaf("b"));
    let cert = files.write("a.pem", &a.cert);
    let other_key = files.write("b.key", &b.key);
    let missing = files.path("missing.pem");
    for (args, expected) in [
        (
            vec![
                "--tls-cert",
                &missing,
                "--tls-key",
                other_key.to_str().unwrap(),
            ],
            format!("cannot read --tls-cert {missing}: "),
        ),
        (
            vec![
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                other_key.to_str().unwrap(),
            ],
            format!(
                "--tls-key {} does not match --tls-cert {}: ",
                other_key.display(),
                cert.display()
            ),
        ),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
            .arg("all")
            .args(&args)
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(&expected), "{stderr}");
    }
}

/// `testbed sim --verify` end to end over mutual TLS with a token: every
/// event published over TLS is processed exactly once; the same run
/// without `--tls-ca` is refused at start, and one without a client
/// certificate cannot even read the ledger (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_verify_over_mutual_tls_with_a_token() {
    let files = Files::new("sim");
    let (server_ca, client_ca) = (Ca::new("sim-server-ca"), Ca::new("sim-client-ca"));
    let (leaf, client) = (server_ca.leaf("server"), client_ca.leaf("sim"));
    let secret = "writer-secret-0123456789";
    let client_ca_file = files.write("client-ca.pem", &client_ca.pem());
    let tokens = files.write("tokens", &format!("ci-writer:write:{secret}\n"));
    let all = start_tls(
        &files,
        &leaf,
        &[
            "--tls-client-ca",
            client_ca_file.to_str().unwrap(),
            "--auth-tokens-file",
            tokens.to_str().unwrap(),
        ],
    );
    wait_serving(all.addr, &client_tls(&server_ca.pem(), Some(&client))).await;
    let target = format!("https://{}", all.addr);
    let ca = files.write("ca.pem", &server_ca.pem());
    let (cert, key) = (
        files.write("sim.pem", &client.cert),
        files.write("sim.key", &client.key),
    );
    let run = |run_id: &'static str, extra: Vec<String>| {
        let mut args: Vec<String> = [
            "--target",
            &target,
            "--rate",
            "400",
            "--duration",
            "2s",
            "--devices",
            "20",
            "--token",
            secret,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            common::sim::Sim::start(run_id, &args)
                .finish(Duration::from_secs(90))
                .await
        }
    };
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let finished = run(
        "tls-sim",
        vec![
            "--tls-ca".into(),
            path(&ca),
            "--tls-client-cert".into(),
            path(&cert),
            "--tls-client-key".into(),
            path(&key),
            "--verify-timeout".into(),
            "30s".into(),
        ],
    )
    .await;
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let verification = &finished.json["verification"];
    assert_eq!(verification["passed"], true, "{verification}");
    assert_eq!(finished.json["total"]["accepted"], 800, "{}", finished.json);
    assert_eq!(
        common::sim::sum(&verification["processed"]),
        800,
        "{verification}"
    );

    let finished = run("tls-sim-no-ca", vec![]).await;
    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("https:// targets need --tls-ca"),
        "{}",
        finished.stderr
    );

    let finished = run(
        "tls-sim-no-cert",
        vec![
            "--tls-ca".into(),
            path(&ca),
            "--max-retries".into(),
            "0".into(),
            "--verify-timeout".into(),
            "1s".into(),
            "--drain-timeout".into(),
            "1s".into(),
        ],
    )
    .await;
    // Refused in the handshake: the ledger cannot even be read.
    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("verification could not read the delivery ledger"),
        "{}",
        finished.stderr
    );
}

/// The TLS handshake happens after the connection is counted against
/// --max-connections: with a cap of one and no reserve, a client that
/// opened TCP and sent nothing holds the only slot, so a TLS client is
/// refused (counted as refused, not as a TLS failure) until the silent one
/// is closed at --handshake-timeout; then it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_runs_inside_the_connection_cap() {
    let (files, ca, leaf) = material("cap");
    let all = serving_tls(
        &files,
        &leaf,
        &ca,
        &[
            "--max-connections",
            "1",
            "--reserved-connections",
            "0",
            "--handshake-timeout",
            "1s",
        ],
    )
    .await;
    // The readiness checks' connections are gone before the silent one.
    let open = "server_connections_open";
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(all.metrics_addr, open, "").await != 0.0 {
        assert!(Instant::now() < deadline, "connections still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_before = metric(all.metrics_addr, "server_connections_refused_total", "").await;
    let mut silent = tokio::net::TcpStream::connect(all.addr).await.unwrap();
    wait_metric(all.metrics_addr, open, "", 1.0).await;

    let refused = handshake(all.addr, &ca.pem(), None).await;
    assert!(refused.is_err(), "served past the cap: {refused:?}");
    assert_eq!(
        metric(all.metrics_addr, "server_connections_refused_total", "").await,
        refused_before + 1.0
    );
    assert_eq!(metric(all.metrics_addr, FAILURES, "").await, 0.0);

    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the silent connection is closed at the handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_failures(&all, "timeout", 1.0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if handshake(all.addr, &ca.pem(), None).await == Ok(leaf.der.clone()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never served after the slot freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `testbed sim --serve` over TLS on both sides: its own port serves TLS
/// (health on the plaintext probe port), and a run it starts publishes to
/// a TLS `testbed all` through `--tls-ca`: 200 events sent, 200 accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_serve_runs_over_tls_and_serves_tls() {
    use testbed_proto::v1::simulator_service_client::SimulatorServiceClient;

    let files = Files::new("sim-serve");
    let ca = Ca::new("sim-serve-ca");
    let (target_leaf, sim_leaf) = (ca.leaf("all"), ca.leaf("sim"));
    let all = start_tls(&files, &target_leaf, &[]);
    let tls = client_tls(&ca.pem(), None);
    wait_serving(all.addr, &tls).await;
    let target = format!("https://{}", all.addr);
    let sim = Testbed::start(&[
        "sim",
        "--serve",
        "--target",
        &target,
        "--tls-ca",
        files.write("ca.pem", &ca.pem()).to_str().unwrap(),
        "--tls-cert",
        files.write("sim.pem", &sim_leaf.cert).to_str().unwrap(),
        "--tls-key",
        files.write("sim.key", &sim_leaf.key).to_str().unwrap(),
        "--probe-addr",
        "127.0.0.1:0",
    ]);
    wait_serving(sim.addr, &tls).await;
    let probe = sim.probe_addr.expect("the probe address");
    let plain = Channel::from_shared(format!("http://{probe}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = common::health_check(plain, "testbed.v1.SimulatorService")
        .await
        .unwrap();
    assert_eq!(status, ServingStatus::Serving);

    let mut client = SimulatorServiceClient::new(connect(sim.addr, tls).await.unwrap());
    let figures = run_to_completion(&mut client, "tls-serve-1", 200).await;
    assert_eq!(figures.events_sent, 200, "{figures:?}");
    assert_eq!(figures.events_accepted, 200, "{figures:?}");
}

/// Starts a 1 s run of `rate` events/s on 8 devices through `client` (a
/// `sim --serve`) and waits for it to complete; its figures.
async fn run_to_completion(
    client: &mut testbed_proto::v1::simulator_service_client::SimulatorServiceClient<Channel>,
    run_id: &str,
    rate: u32,
) -> testbed_proto::v1::RunFigures {
    use testbed_proto::v1::{
        GetRunRequest, RateLoad, RunSpec, RunState, StartRunRequest, run_spec::Load,
    };
    let spec = RunSpec {
        run_id: run_id.to_owned(),
        load: Some(Load::Rate(RateLoad {
            events_per_second: f64::from(rate),
            duration: Some(Duration::from_secs(1).try_into().unwrap()),
        })),
        devices: 8,
        ..Default::default()
    };
    client
        .start_run(StartRunRequest { spec: Some(spec) })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = client
            .get_run(GetRunRequest {
                run_id: run_id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .run
            .unwrap();
        if run.state() == RunState::Completed {
            return run.figures.unwrap();
        }
        assert!(Instant::now() < deadline, "run not completed: {run:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `sim --serve` reads its client certificate files again for each run:
/// the target's client CA and the simulator's certificate are both
/// rotated to a new CA between two runs, and the second run is served
/// with the new certificate (with the one read at start it would be
/// refused in the handshake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_serve_runs_use_a_rotated_client_certificate() {
    use testbed_proto::v1::simulator_service_client::SimulatorServiceClient;

    let files = Files::new("sim-rotate");
    let server_ca = Ca::new("rotate-server-ca");
    let (old_ca, new_ca) = (Ca::new("rotate-old-ca"), Ca::new("rotate-new-ca"));
    let (server, old, new) = (
        server_ca.leaf("all"),
        old_ca.leaf("sim-old"),
        new_ca.leaf("sim-new"),
    );
    let client_ca_file = files.write("client-ca.pem", &old_ca.pem());
    let all = start_tls(
        &files,
        &server,
        &[
            "--tls-client-ca",
            client_ca_file.to_str().unwrap(),
            "--tls-reload-interval",
            "100ms",
        ],
    );
    wait_serving(all.addr, &client_tls(&server_ca.pem(), Some(&old))).await;
    let target = format!("https://{}", all.addr);
    let sim = Testbed::start(&[
        "sim",
        "--serve",
        "--target",
        &target,
        "--tls-ca",
        files
            .write("server-ca.pem", &server_ca.pem())
            .to_str()
            .unwrap(),
        "--tls-client-cert",
        files.write("sim.pem", &old.cert).to_str().unwrap(),
        "--tls-client-key",
        files.write("sim.key", &old.key).to_str().unwrap(),
    ]);
    sim.wait_serving("testbed.v1.SimulatorService").await;
    let mut client = SimulatorServiceClient::new(sim.channel().await);
    let first = run_to_completion(&mut client, "rotate-1", 100).await;
    assert_eq!(first.events_accepted, 100, "{first:?}");

    let replace = |name: &str, text: &str| {
        let tmp = files.write(&format!("{name}.tmp"), text);
        std::fs::rename(tmp, files.dir.join(name)).unwrap();
    };
    let reloaded = metric(all.metrics_addr, RELOADS, "result=\"ok\"").await;
    replace("client-ca.pem", &new_ca.pem());
    wait_metric(all.metrics_addr, RELOADS, "result=\"ok\"", reloaded + 1.0).await;
    assert!(
        health(all.addr, client_tls(&server_ca.pem(), Some(&old)), "")
            .await
            .is_err(),
        "the old client certificate is still accepted"
    );
    replace("sim.key", &new.key);
    replace("sim.pem", &new.cert);

    let second = run_to_completion(&mut client, "rotate-2", 100).await;
    assert_eq!(second.events_accepted, 100, "{second:?}");
}

/// Under mutual TLS the audit lines of `sim --serve` name the client
/// certificate's subject beside the token: on a StartRun that is served
/// and on one the auth layer refuses for its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_name_the_client_certificate() {
    use testbed_proto::v1::simulator_service_client::SimulatorServiceClient;
    use testbed_proto::v1::{RateLoad, RunSpec, StartRunRequest, run_spec::Load};

    let files = Files::new("audit-subject");
    let ca = Ca::new("audit-ca");
    let (server, runner) = (ca.leaf("sim"), ca.leaf("ci-runner"));
    let secret = "writer-secret-0123456789";
    let tokens = files.write("tokens", &format!("ci-writer:write:{secret}\n"));
    let all = Testbed::start(&["all"]);
    all.wait_serving("testbed.v1.IngestService").await;
    let target = format!("http://{}", all.addr);
    let sim = Testbed::start_logged(
        &[
            "sim",
            "--serve",
            "--target",
            &target,
            "--tls-cert",
            files.write("sim.pem", &server.cert).to_str().unwrap(),
            "--tls-key",
            files.write("sim.key", &server.key).to_str().unwrap(),
            "--tls-client-ca",
            files.write("ca.pem", &ca.pem()).to_str().unwrap(),
            "--auth-tokens-file",
            tokens.to_str().unwrap(),
        ],
        &[],
    );
    let tls = client_tls(&ca.pem(), Some(&runner));
    wait_serving(sim.addr, &tls).await;
    let mut client = SimulatorServiceClient::new(connect(sim.addr, tls).await.unwrap());
    let start = |run_id: &str, token: &str| {
        let mut request = Request::new(StartRunRequest {
            spec: Some(RunSpec {
                run_id: run_id.to_owned(),
                load: Some(Load::Rate(RateLoad {
                    events_per_second: 50.0,
                    duration: Some(Duration::from_millis(200).try_into().unwrap()),
                })),
                devices: 2,
                ..Default::default()
            }),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    client.start_run(start("audited-1", secret)).await.unwrap();
    let refused = client
        .start_run(start("audited-2", "wrong-secret-0123456789ab"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let deadline = Instant::now() + Duration::from_secs(10);
    let (served, denied) = loop {
        let log = sim.log();
        let line = |needle: &str| log.lines().find(|l| l.contains(needle)).map(str::to_owned);
        if let (Some(served), Some(denied)) = (
            line("sim StartRun by ci-writer"),
            line("call refused by authentication"),
        ) {
            break (served, denied);
        }
        assert!(Instant::now() < deadline, "no audit lines in:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(served.contains("certificate=CN=ci-runner"), "{served}");
    assert!(served.contains("run_id=audited-1"), "{served}");
    assert!(denied.contains("certificate=CN=ci-runner"), "{denied}");
    assert!(denied.contains("peer=127.0.0.1:"), "{denied}");
}
