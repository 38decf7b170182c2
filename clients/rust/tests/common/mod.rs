//! A harness that runs the real `testbed` binary on an ephemeral port, as
//! services/testbed/tests/common does (`--addr-file`, readiness by health
//! checks, killed on drop), for a crate outside the binary's package: the
//! binary comes from `TESTBED_BIN`, else from this build's target directory
//! (`cargo test --workspace` and scripts/test build it; alone, run
//! `cargo build -p testbed` first).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use testbed_test_support::process::eventually;
use testbed_test_support::process::{self, Announced, Launch, Process};

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

/// The address file, through the server crate's reader (the format's one
/// reader); a malformed one fails the test.
fn read_addr_file(path: &Path) -> Option<Announced> {
    let a = testbed_server::addr_file::read(path)?.expect("addr file format");
    Some(Announced::new(a.grpc, a.metrics, a.probe))
}

/// A `testbed all` process; killed on drop.
pub struct Testbed {
    process: Process,
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The plaintext health listener (`--probe-addr`), when started with
    /// one (a TLS server's health is checked there).
    pub probe: Option<SocketAddr>,
    args: Vec<String>,
}

impl Testbed {
    /// Starts `testbed all <args>` on 127.0.0.1:0 and waits until its
    /// ingest and query services are SERVING.
    pub async fn start(args: &[&str]) -> Self {
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.insert(0, "all".to_owned());
        let tb = Self::spawn(args, "127.0.0.1:0");
        tb.wait_serving().await;
        tb
    }

    /// SIGKILLs the process and starts it again with the same arguments on
    /// the same port (as a pod restarted behind its Service).
    pub async fn restart(&mut self) {
        self.process.kill();
        let addr = self.addr.to_string();
        *self = Self::spawn(std::mem::take(&mut self.args), &addr);
        self.wait_serving().await;
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spawn(args: Vec<String>, addr: &str) -> Self {
        let process = Process::spawn(Launch {
            bin: &testbed_bin(),
            args: &args,
            env: &[],
            grpc_addr: addr,
            stdout: process::default_stdout(),
            log_file: None,
            read_addr_file,
        });
        Self {
            addr: process.addr,
            probe: process.probe_addr,
            process,
            args,
        }
    }

    /// Polls health (on the probe port, if any) until ingest and query
    /// are SERVING (10 s at most).
    async fn wait_serving(&self) {
        let at = self.probe.unwrap_or(self.addr);
        process::wait_serving(at, &["testbed.v1.IngestService", "testbed.v1.QueryService"]).await;
    }
}
