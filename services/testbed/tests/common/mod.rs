//! A harness that runs the real `testbed` binary on an ephemeral port.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod h2;
pub mod otlp;
pub mod pipeline;
pub mod sim;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A `testbed` process; killed on drop if still running.
pub struct Testbed {
    child: Child,
    /// The bound gRPC address, read from `--addr-file`.
    pub addr: SocketAddr,
    /// The bound `/metrics` address, from the same file.
    pub metrics_addr: SocketAddr,
    /// The plaintext health-only listener, when `--probe-addr` was given.
    pub probe_addr: Option<SocketAddr>,
    addr_file: PathBuf,
    /// Where its stdout goes, when kept ([`Testbed::start_logged`]).
    log_file: Option<PathBuf>,
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
        let stdout = if std::env::var_os("TESTBED_IT_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        Self::spawn(args, env, addr, stdout, None)
    }

    /// [`Testbed::start_with_env`], its log (stdout) kept in a file for
    /// [`Testbed::log`].
    pub fn start_logged(args: &[&str], env: &[(&str, String)]) -> Self {
        let log_file = std::env::temp_dir().join(format!(
            "testbed-it-{}-{}.log",
            std::process::id(),
            unique()
        ));
        let file = std::fs::File::create(&log_file).expect("create the log file");
        Self::spawn(args, env, "127.0.0.1:0", Stdio::from(file), Some(log_file))
    }

    /// What the process has logged so far (empty unless started with
    /// [`Testbed::start_logged`]).
    pub fn log(&self) -> String {
        self.log_file
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    fn spawn(
        args: &[&str],
        env: &[(&str, String)],
        addr: &str,
        stdout: Stdio,
        log_file: Option<PathBuf>,
    ) -> Self {
        let addr_file = std::env::temp_dir().join(format!(
            "testbed-it-{}-{}.json",
            std::process::id(),
            unique()
        ));
        let _ = std::fs::remove_file(&addr_file);
        let mut child = Command::new(env!("CARGO_BIN_EXE_testbed"))
            .args(args)
            .args(["--grpc-addr", addr, "--metrics-addr", "127.0.0.1:0"])
            .arg("--addr-file")
            .arg(&addr_file)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn testbed");
        let deadline = Instant::now() + Duration::from_secs(30);
        let announced = loop {
            if let Some(announced) = testbed_server::addr_file::read(&addr_file) {
                break announced.expect("addr file format");
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("testbed exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "testbed did not bind within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let (addr, metrics_addr) = (
            announced.grpc,
            announced.metrics.expect("a metrics address"),
        );
        Self {
            child,
            addr,
            metrics_addr,
            probe_addr: announced.probe,
            addr_file,
            log_file,
        }
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
        let mut health = HealthClient::new(self.channel().await);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .map(|r| r.into_inner().status());
            if matches!(status, Ok(ServingStatus::Serving)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{service:?} not SERVING: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to finish or ack anything.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`; returns its status
    /// and how long it took. Async so that the test's own gRPC connections
    /// keep running (answering the server's GOAWAY/PING) meanwhile.
    pub async fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "testbed still running after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.addr_file);
        if let Some(log_file) = &self.log_file {
            let _ = std::fs::remove_file(log_file);
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
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
