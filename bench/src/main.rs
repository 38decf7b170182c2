//! `testbed-bench`: parses flags and runs the harness (or, with `--stub` /
//! `--otlp-sink`, one of its helper servers). All logic is in the library.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use testbed_bench::cli::Cli;
use testbed_bench::error::Error;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let result = if cli.stub || cli.otlp_sink {
        serve_helper(cli)
    } else {
        harness(cli)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "testbed-bench failed");
            eprintln!("testbed-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The harness runs on a current-thread runtime: every child is forked by
/// the main thread, which `setpriv --pdeathsig` relies on (see `process`).
fn harness(cli: Cli) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Process(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| Error::Process(format!("SIGTERM handler: {e}")))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| Error::Process(format!("SIGINT handler: {e}")))?;
        // Dropping the run future on a signal drops every process guard,
        // which stops what it started.
        let written = tokio::select! {
            r = testbed_bench::run(cli) => r?,
            _ = term.recv() => return Err(Error::Interrupted),
            _ = int.recv() => return Err(Error::Interrupted),
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", written.summary);
        tracing::info!(
            json = %written.json.display(),
            markdown = %written.markdown.display(),
            chart = ?written.chart,
            "results written"
        );
        Ok(())
    })
}

/// `--stub` or `--otlp-sink`: a small multi-threaded server.
fn serve_helper(cli: Cli) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Process(format!("cannot start the runtime: {e}")))?;
    let addr_file = cli
        .addr_file
        .clone()
        .ok_or_else(|| Error::Process("--addr-file is required with --stub/--otlp-sink".into()))?;
    runtime.block_on(async move {
        if cli.stub {
            testbed_bench::stub::run_stub(cli.listen, &addr_file).await
        } else {
            let stats = cli
                .stats_file
                .clone()
                .unwrap_or_else(|| addr_file.with_extension("stats.json"));
            testbed_bench::telemetry::run_sink(cli.listen, &addr_file, &stats).await
        }
    })
}
