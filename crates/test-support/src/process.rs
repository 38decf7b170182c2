//! A real `testbed` process on an ephemeral port: started with
//! `--grpc-addr`, `--metrics-addr 127.0.0.1:0` and an `--addr-file`, its
//! addresses read from that file once it has bound, its readiness checked
//! by polling gRPC health, killed on drop.
//!
//! The one harness of the binary's integration tests
//! (`services/testbed/tests/common`) and of the Rust client's
//! (`clients/rust/tests/common`). It does not depend on the binary's crate
//! nor on the server crate: the caller names the binary and passes the
//! reader of the address file (`testbed_server::addr_file::read`, the
//! format's one reader).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The addresses a process announced in its `--addr-file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// The gRPC listener.
    pub grpc: SocketAddr,
    /// The `/metrics` listener (the harness asks for one: never `None`
    /// from a process it started).
    pub metrics: Option<SocketAddr>,
    /// The plaintext health-only listener (`--probe-addr`), if any.
    pub probe: Option<SocketAddr>,
}

impl Announced {
    /// The addresses read from a file.
    pub fn new(grpc: SocketAddr, metrics: Option<SocketAddr>, probe: Option<SocketAddr>) -> Self {
        Self {
            grpc,
            metrics,
            probe,
        }
    }
}

/// Reads an address file: `None` while it is not there yet.
pub type ReadAddrFile = fn(&Path) -> Option<Announced>;

/// How to start a process.
pub struct Launch<'a> {
    /// The `testbed` binary.
    pub bin: &'a Path,
    /// Its arguments (the subcommand first); the harness adds
    /// `--grpc-addr`, `--metrics-addr` and `--addr-file`.
    pub args: &'a [String],
    /// Extra environment variables.
    pub env: &'a [(&'a str, String)],
    /// The gRPC address to bind (`127.0.0.1:0`, or a predecessor's port).
    pub grpc_addr: &'a str,
    /// Where its stdout goes.
    pub stdout: Stdio,
    /// The file `stdout` writes to, if any: removed on drop, read by
    /// [`Process::log`].
    pub log_file: Option<PathBuf>,
    /// The reader of `--addr-file`.
    pub read_addr_file: ReadAddrFile,
}

/// A running `testbed` process; killed on drop if still running.
pub struct Process {
    child: Child,
    /// The bound gRPC address, read from `--addr-file`.
    pub addr: SocketAddr,
    /// The bound `/metrics` address, from the same file.
    pub metrics_addr: SocketAddr,
    /// The plaintext health-only listener, when `--probe-addr` was given.
    pub probe_addr: Option<SocketAddr>,
    addr_file: PathBuf,
    log_file: Option<PathBuf>,
}

/// Its stdout: dropped, unless `TESTBED_IT_LOGS` is set in the test's
/// environment (then inherited).
pub fn default_stdout() -> Stdio {
    if std::env::var_os("TESTBED_IT_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// A path in the temporary directory unique to this test process and call:
/// `testbed-it-<pid>-<n>.<extension>`.
pub fn temp_file(extension: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "testbed-it-{}-{}.{extension}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

impl Process {
    /// Starts the process and waits until it has bound its ports (30 s at
    /// most; it exiting first is a panic).
    pub fn spawn(launch: Launch<'_>) -> Self {
        let addr_file = temp_file("json");
        let _ = std::fs::remove_file(&addr_file);
        let mut child = Command::new(launch.bin)
            .args(launch.args)
            .args([
                "--grpc-addr",
                launch.grpc_addr,
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .arg("--addr-file")
            .arg(&addr_file)
            .envs(launch.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(launch.stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn testbed");
        let deadline = Instant::now() + Duration::from_secs(30);
        let announced = loop {
            if let Some(announced) = (launch.read_addr_file)(&addr_file) {
                break announced;
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
        Self {
            child,
            addr: announced.grpc,
            metrics_addr: announced.metrics.expect("a metrics address"),
            probe_addr: announced.probe,
            addr_file,
            log_file: launch.log_file,
        }
    }

    /// What the process has logged so far (empty unless its stdout went to
    /// [`Launch::log_file`]).
    pub fn log(&self) -> String {
        self.log_file
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
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

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.addr_file);
        if let Some(log_file) = &self.log_file {
            let _ = std::fs::remove_file(log_file);
        }
    }
}

/// Polls gRPC health at `at` until every one of `services` is SERVING
/// (10 s at most for all of them).
pub async fn wait_serving(at: SocketAddr, services: &[&str]) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{at}"))
        .unwrap()
        .connect_lazy();
    let mut health = HealthClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(10);
    for service in services {
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: (*service).to_owned(),
                })
                .await
                .map(|r| r.into_inner().status());
            if matches!(status, Ok(ServingStatus::Serving)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{service:?} not SERVING: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls `probe` every 50 ms until it returns `Some` (`limit` at most):
/// waiting for something asynchronous, never a fixed sleep.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
