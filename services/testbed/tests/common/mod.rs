//! A harness that runs the real `testbed` binary on an ephemeral port.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod h2;
pub mod otlp;
pub mod pipeline;
pub mod sim;
pub mod sim_api;
pub mod tls;

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::Stdio;

use testbed_test_support::process::{self, Announced, Launch, Process};
use tonic::transport::Channel;

/// A `testbed` process ([`Process`]: its addresses, kill, SIGTERM, exit);
/// killed on drop if still running.
pub struct Testbed(Process);

impl Deref for Testbed {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.0
    }
}

impl DerefMut for Testbed {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.0
    }
}

/// The address file, through the server crate's reader (the format's one
/// reader); a malformed one fails the test.
fn read_addr_file(path: &Path) -> Option<Announced> {
    let a = testbed_server::addr_file::read(path)?.expect("addr file format");
    Some(Announced::new(a.grpc, a.metrics, a.probe))
}

impl Testbed {
    /// Starts `testbed <args> --grpc-addr 127.0.0.1:0 --addr-file …` and
    /// waits until it has bound its port. Its log (stdout) is dropped,
    /// unless `TESTBED_IT_LOGS` is set in the test's environment.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`Testbed::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, String)]) -> Self {
        Self::start_at(args, env, "127.0.0.1:0")
    }

    /// [`Testbed::start`] on gRPC address `addr` (a process restarted on
    /// the port its predecessor had, as a pod behind a Service is).
    pub fn start_at(args: &[&str], env: &[(&str, String)], addr: &str) -> Self {
        Self::spawn(args, env, addr, process::default_stdout(), None)
    }

    /// [`Testbed::start_with_env`], its log (stdout) kept in a file for
    /// [`Process::log`].
    pub fn start_logged(args: &[&str], env: &[(&str, String)]) -> Self {
        let log_file = process::temp_file("log");
        let file = std::fs::File::create(&log_file).expect("create the log file");
        Self::spawn(args, env, "127.0.0.1:0", Stdio::from(file), Some(log_file))
    }

    fn spawn(
        args: &[&str],
        env: &[(&str, String)],
        addr: &str,
        stdout: Stdio,
        log_file: Option<std::path::PathBuf>,
    ) -> Self {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        Self(Process::spawn(Launch {
            bin: Path::new(env!("CARGO_BIN_EXE_testbed")),
            args: &args,
            env,
            grpc_addr: addr,
            stdout,
            log_file,
            read_addr_file,
        }))
    }

    /// A channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Polls health until `service` reports SERVING (10 s at most).
    pub async fn wait_serving(&self, service: &str) {
        process::wait_serving(self.addr, &[service]).await;
    }
}

/// A `testbed worker`'s flags for quick tests: entries of a dead consumer
/// claimed after 300 ms, chores every 100 ms, reads blocking 100 ms.
pub const FAST_WORKER_FLAGS: [&str; 6] = [
    "--claim-idle",
    "300ms",
    "--maintenance-interval",
    "100ms",
    "--read-block",
    "100ms",
];

/// The one field an INVALID_ARGUMENT's google.rpc.BadRequest names.
pub fn bad_field(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let bad = status
        .get_details_bad_request()
        .expect("BadRequest details");
    assert_eq!(bad.field_violations.len(), 1, "{bad:?}");
    bad.field_violations[0].field.clone()
}

/// `service`'s health on `channel` (no credentials), or the call's status.
pub async fn health_check(
    channel: Channel,
    service: &str,
) -> Result<tonic_health::pb::health_check_response::ServingStatus, tonic::Status> {
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(|r| r.into_inner().status())
}

/// `GET path` on the metrics port: the status and headers, and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// `GET /metrics` with an `Accept` header; returns the `Content-Type` and
/// the body.
pub async fn scrape(addr: std::net::SocketAddr, accept: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    (content_type, body.to_owned())
}
