//! The harness's own small servers (`--stub`, `--otlp-sink`): bind,
//! announce the address like the testbed does (through
//! [`testbed_server::addr_file`]), serve until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use testbed_server::addr_file;
use tokio::signal::unix::{SignalKind, signal};
use tonic::transport::server::{Router, TcpIncoming};

use crate::error::{Context as _, Error, Result};
use crate::process::{Proc, inherited_settings, log_tail};

/// Serves `router` on `listen` until a signal.
pub async fn run(router: Router, listen: SocketAddr, addr_file: &Path) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .context(|| format!("binding {listen}"))?;
    let bound = listener
        .local_addr()
        .context(|| format!("reading the address bound for {listen}"))?;
    let announced = addr_file::Announced {
        grpc: bound,
        metrics: None,
        probe: None,
    };
    addr_file::write(addr_file, &announced)
        .context(|| format!("writing {}", addr_file.display()))?;
    tracing::info!(%bound, "serving");
    let mut term = signal(SignalKind::terminate()).context(|| "installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context(|| "installing a SIGINT handler")?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    // No Nagle delay on acks, as the testbed's own servers: otherwise a
    // small ack waits for the client's delayed ACK and the stub looks
    // slower than the pipeline it stands in for.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .map_err(|e| Error::Process(format!("serving on {bound}: {e}")))
}

/// Starts this executable with `--stub` or `--otlp-sink` in `dir` and
/// waits for its address file; returns it and its `http://` URL.
pub async fn start_helper(self_exe: &Path, dir: &Path, mode: &str) -> Result<(Proc, String)> {
    let addr_file = dir.join(format!("{mode}.addr.json"));
    let mut args = vec![
        format!("--{mode}"),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--addr-file".into(),
        addr_file.display().to_string(),
    ];
    if mode == "otlp-sink" {
        args.extend([
            "--stats-file".into(),
            dir.join("otlp-sink.stats.json").display().to_string(),
        ]);
    }
    let mut proc = Proc::spawn(
        mode,
        self_exe,
        &args,
        &[("RUST_LOG".into(), "warn".into())],
        &inherited_settings(),
        &dir.join(format!("{mode}.log")),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(announced) = addr_file::read(&addr_file) {
            let announced = announced.map_err(Error::Process)?;
            return Ok((proc, format!("http://{}", announced.grpc)));
        }
        if let Some(status) = proc.try_exit()? {
            return Err(Error::Process(format!(
                "{mode} exited with {status}: {}",
                log_tail(proc.log())
            )));
        }
        if Instant::now() >= deadline {
            return Err(Error::Process(format!(
                "{mode} did not announce its address"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
