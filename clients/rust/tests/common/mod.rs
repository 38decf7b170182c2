//! A harness that runs the real `testbed` binary on an ephemeral port, as
//! services/testbed/tests/common does (`--addr-file`, readiness by health
//! checks, killed on drop), for a crate outside the binary's package: the
//! binary comes from `TESTBED_BIN`, else from this build's target directory
//! (`cargo test --workspace` and scripts/test build it; alone, run
//! `cargo build -p testbed` first).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The `testbed` binary to run.
pub fn testbed_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TESTBED_BIN") {
        return bin.into();
    }
    // target/<profile>/deps/<this test> -> target/<profile>/testbed
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("testbed"))
        .unwrap();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p testbed` first or set TESTBED_BIN",
        bin.display()
    );
    bin
}

/// A `testbed all` process; killed on drop.
pub struct Testbed {
    child: Child,
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The plaintext health listener (`--probe-addr`), when started with
    /// one (a TLS server's health is checked there).
    pub probe: Option<SocketAddr>,
    args: Vec<String>,
    addr_file: PathBuf,
}

impl Testbed {
    /// Starts `testbed all <args>` on 127.0.0.1:0 and waits until its
    /// ingest and query services are SERVING.
    pub async fn start(args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let tb = Self::spawn(args, "127.0.0.1:0");
        tb.wait_serving().await;
        tb
    }

    /// SIGKILLs the process and starts it again with the same arguments on
    /// the same port (as a pod restarted behind its Service).
    pub async fn restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let _ = std::fs::remove_file(&self.addr_file);
        let addr = self.addr.to_string();
        *self = Self::spawn(std::mem::take(&mut self.args), &addr);
        self.wait_serving().await;
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spawn(args: Vec<String>, addr: &str) -> Self {
        let addr_file = std::env::temp_dir().join(format!(
            "testbed-rust-client-it-{}-{}.json",
            std::process::id(),
            unique()
        ));
        let _ = std::fs::remove_file(&addr_file);
        let stdout = if std::env::var_os("TESTBED_IT_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let mut child = Command::new(testbed_bin())
            .arg("all")
            .args(&args)
            .args(["--grpc-addr", addr, "--metrics-addr", "127.0.0.1:0"])
            .arg("--addr-file")
            .arg(&addr_file)
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn testbed");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (grpc, probe) = loop {
            let announced = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
            if let Some(grpc) = announced.as_ref().and_then(|v| v["grpc"].as_str()) {
                let probe = announced.as_ref().and_then(|v| v["probe"].as_str());
                break (
                    grpc.parse::<SocketAddr>().unwrap(),
                    probe.map(|p| p.parse::<SocketAddr>().unwrap()),
                );
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
            addr: grpc,
            probe,
            args,
            addr_file,
        }
    }

    /// Polls health (on the probe port, if any) until ingest and query
    /// are SERVING (10 s at most).
    async fn wait_serving(&self) {
        let at = self.probe.unwrap_or(self.addr);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{at}"))
            .unwrap()
            .connect_lazy();
        let mut health = HealthClient::new(channel);
        let deadline = Instant::now() + Duration::from_secs(10);
        for service in ["testbed.v1.IngestService", "testbed.v1.QueryService"] {
            loop {
                let status = health
                    .check(HealthCheckRequest {
                        service: service.to_owned(),
                    })
                    .await
                    .map(|r| r.into_inner().status());
                if matches!(status, Ok(ServingStatus::Serving)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{service} not SERVING: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.addr_file);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Polls `probe` every 50 ms until it returns `Some` (`limit` at most):
/// waiting for the asynchronous worker, never a fixed sleep.
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
