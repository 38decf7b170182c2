//! `testbed`: the one binary of the testbed.
//!
//! A thin shell: parses flags, starts telemetry, binds listeners, wires the
//! shutdown signal, and hands everything to the service crates. All logic
//! lives in the libraries, so tests can start the same servers in-process.
//!
//! Shutdown, in this order: SIGTERM/SIGINT cancels the root token; health
//! goes NOT_SERVING and the listener stops accepting; in-flight calls,
//! streams and consumers get --shutdown-grace; then the telemetry providers
//! get --telemetry-flush-timeout to export what they hold; then the process
//! exits 0. From SIGTERM to exit: at most the sum of the two, plus the
//! moment it takes to stop the runtime.
//!
//! Exit codes: 0 after a clean shutdown (or a `testbed sim` run whose
//! checks all passed); 1 when a server cannot start or fails, and when a
//! `testbed sim` run fails its --verify check or leaves events
//! undelivered; 2 for bad flags (clap's convention), including a
//! malformed `--threshold`; 99 when a `testbed sim` run crosses a
//! `--threshold` (k6's code).
#![forbid(unsafe_code)]

mod cli;
mod status;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use testbed_server::{CancellationToken, GrpcServer, ListenArgs, Listeners};

use testbed_stream::{AnyLog, EventLog as _};
use testbed_telemetry::TelemetryGuard;

use crate::cli::{Cli, Command, IngestArgs, QueryArgs, ServerArgs, WorkerArgs};

/// Why the process stops with a non-zero status.
#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Bind(#[from] testbed_server::BindError),
    #[error(transparent)]
    Serve(#[from] testbed_server::ServeError),
    #[error(transparent)]
    Sim(#[from] testbed_sim::SimError),
    #[error(transparent)]
    Store(#[from] testbed_stream::StoreError),
    #[error(
        "`testbed {0}` needs --redis-url (or REDIS_URL): the embedded log only works inside `testbed all`"
    )]
    NeedsRedis(&'static str),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// `--cpu-class` of `testbed worker` (`batch` unless given). Refused by
/// `testbed all` unless `normal`, where it would slow ingest and query too.
/// A class given and refused by the platform (a seccomp profile) is an
/// error; the default refused is a warning, returned to be logged once
/// logging is up, and the worker runs at the normal class.
fn cpu_class(command: &Command) -> Result<Option<String>, String> {
    match command {
        Command::Worker(args) => {
            match testbed_worker::cpu::apply_to_this_thread(args.worker.worker_cpu_class()) {
                Ok(()) => Ok(None),
                Err(err) if args.worker.cpu_class.is_some() => Err(err),
                Err(err) => Ok(Some(format!("{err}; the worker runs at the normal class"))),
            }
        }
        Command::All(args)
            if args
                .worker
                .cpu_class
                .is_some_and(|class| class != testbed_worker::CpuClass::Normal) =>
        {
            Err(
            "--cpu-class applies to `testbed worker` only: in `testbed all` it would slow ingest and query as well"
                .to_owned(),
        )
        }
        _ => Ok(None),
    }
}

fn main() -> ExitCode {
    // `--version` shows the revision and architecture, computed at run time.
    let version: &'static str = Box::leak(testbed_build_info::long_version().into_boxed_str());
    let matches = Cli::command().version(version).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    // The one rustls crypto provider (ring), installed before any server
    // or client builds a TLS configuration (crates/server/src/tls).
    let _ = testbed_server::tls::provider();
    // Before the runtime starts, so that its threads inherit the class.
    let cpu_class_warning = match cpu_class(&cli.command) {
        Ok(warning) => warning,
        Err(err) => {
            eprintln!("testbed: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("testbed: {}", MainError::Runtime(err));
            return ExitCode::FAILURE;
        }
    };
    let Stopped {
        code,
        telemetry,
        signals,
    } = runtime.block_on(run(cli, cpu_class_warning));
    // Last, after every server has drained: the final flush, bounded by
    // --telemetry-flush-timeout. On this thread, outside the runtime's
    // workers, which keep the exporters' connections running meanwhile.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().log();
    }
    // Until here a second signal still exits at once (status 130).
    if let Some(signals) = signals {
        signals.abort();
    }
    // Nothing left is worth waiting for: an abandoned exporter or a stray
    // blocking task (a DNS lookup) must not hold up the exit.
    runtime.shutdown_background();
    code
}

/// How [`run`] ended: the exit code, and what `main` still shuts down once
/// the runtime has stopped driving the servers.
struct Stopped {
    code: ExitCode,
    /// None when telemetry could not start.
    telemetry: Option<TelemetryGuard>,
    /// The signal task, kept through the final flush.
    signals: Option<tokio::task::JoinHandle<()>>,
}

impl Stopped {
    fn early(code: ExitCode) -> Self {
        Self {
            code,
            telemetry: None,
            signals: None,
        }
    }
}

/// Starts telemetry, then runs the subcommand until it stops on its own or
/// after SIGTERM/SIGINT and the drain (--shutdown-grace).
async fn run(cli: Cli, cpu_class_warning: Option<String>) -> Stopped {
    // The exporters run on this runtime, so telemetry starts inside it; the
    // guard is handed back to `main` for the final flush.
    let telemetry = match testbed_telemetry::init(&cli.log, cli.command.service_name()) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("testbed: {err}");
            return Stopped::early(ExitCode::from(2));
        }
    };
    if let Some(warning) = cpu_class_warning {
        tracing::warn!("{warning}");
    }
    let shutdown = CancellationToken::new();
    // The one shutdown path: signals cancel the root token; every server,
    // stream and background task watches it (or a child of it).
    let signals = tokio::spawn(testbed_server::signal::cancel_on_signal(shutdown.clone()));
    let result = dispatch(cli.command, &telemetry, shutdown).await;
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ MainError::NeedsRedis(_)) => {
            eprintln!("testbed: {err}");
            ExitCode::from(2)
        }
        // A run's verdict: thresholds crossed (99), a usage error (2).
        Err(MainError::Sim(err)) if err.exit_code() != 1 => {
            tracing::error!(error = %err, "testbed sim failed");
            eprintln!("testbed: {err}");
            ExitCode::from(err.exit_code())
        }
        Err(err) => {
            // One line, no backtrace: the message names the flag and value.
            tracing::error!(error = %err, "testbed stopped");
            eprintln!("testbed: {err}");
            ExitCode::FAILURE
        }
    };
    Stopped {
        code,
        telemetry: Some(telemetry),
        signals: Some(signals),
    }
}

async fn dispatch(
    command: Command,
    telemetry: &TelemetryGuard,
    shutdown: CancellationToken,
) -> Result<(), MainError> {
    match command {
        Command::All(args) => {
            let log = AnyLog::from_args(&args.server.store).await?;
            let listeners =
                bind_and_announce("all", &args.server.listen, &log, telemetry, &shutdown).await?;
            let mut server = GrpcServer::for_listeners(&listeners);
            testbed_ingest::register(&mut server, &args.ingest, log.clone(), shutdown.clone())
                .await;
            testbed_worker::register(&mut server, &args.worker, log.clone(), shutdown.clone())
                .await;
            testbed_query::register(&mut server, &args.query, log, shutdown.clone()).await;
            server.serve_on(listeners, shutdown).await?;
        }
        Command::Ingest(args) => serve_alone(Alone::Ingest(args), telemetry, shutdown).await?,
        Command::Worker(args) => serve_alone(Alone::Worker(args), telemetry, shutdown).await?,
        Command::Query(args) => serve_alone(Alone::Query(args), telemetry, shutdown).await?,
        Command::Sim(args) if args.serve.serve => {
            let listeners =
                bind_and_announce("sim", &args.serve.listen, None, telemetry, &shutdown).await?;
            testbed_sim::serve::run(testbed_sim::serve_config(&args), listeners, shutdown).await?;
        }
        Command::Sim(args) => testbed_sim::run(args, shutdown).await?,
    }
    tracing::info!("testbed exited cleanly");
    Ok(())
}

/// A service served alone (split mode), with its flags.
enum Alone {
    Ingest(IngestArgs),
    Worker(WorkerArgs),
    Query(QueryArgs),
}

/// Serves one service alone on its Redis log until `shutdown`.
async fn serve_alone(
    service: Alone,
    telemetry: &TelemetryGuard,
    shutdown: CancellationToken,
) -> Result<(), MainError> {
    let (role, args) = match &service {
        Alone::Ingest(a) => ("ingest", &a.server),
        Alone::Worker(a) => ("worker", &a.server),
        Alone::Query(a) => ("query", &a.server),
    };
    let log = redis_log(role, args).await?;
    let listeners = bind_and_announce(role, &args.listen, &log, telemetry, &shutdown).await?;
    let mut server = GrpcServer::for_listeners(&listeners);
    let token = shutdown.clone();
    match &service {
        Alone::Ingest(a) => testbed_ingest::register(&mut server, &a.ingest, log, token).await,
        Alone::Worker(a) => {
            testbed_worker::register(&mut server, &a.worker, log, token).await;
        }
        Alone::Query(a) => testbed_query::register(&mut server, &a.query, log, token).await,
    }
    server.serve_on(listeners, shutdown).await?;
    Ok(())
}

/// The Redis log of a split-mode service: they share state only through
/// Redis, so the embedded log is refused rather than silently isolated.
async fn redis_log(role: &'static str, server: &ServerArgs) -> Result<AnyLog, MainError> {
    if server.store.redis_url.is_none() {
        return Err(MainError::NeedsRedis(role));
    }
    Ok(AnyLog::from_args(&server.store).await?)
}

/// Binds the listeners and logs the one startup line: what runs, which
/// build, on which architecture, at which addresses, on which event store
/// (none for `sim --serve`).
async fn bind_and_announce(
    role: &'static str,
    listen: &ListenArgs,
    log: impl Into<Option<&AnyLog>>,
    telemetry: &TelemetryGuard,
    shutdown: &CancellationToken,
) -> Result<Listeners, MainError> {
    let log = log.into();
    let mut listeners = testbed_server::bind(listen).await?;
    // The metrics endpoint lives as long as the process: scrapers see the
    // last figures until the very end.
    if let Some(metrics) = listeners.metrics.take() {
        // The live status page at `/` asks this process's own gRPC API.
        let status = status::LoopbackStatus::new(
            role,
            listeners.grpc_addr,
            listen.tls.tls_cert.is_some(),
            listeners.probe_addr,
        )
        .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn testbed_telemetry::StatusSource>);
        let serving = telemetry.serve_metrics_and_status(metrics, status, shutdown.clone());
        tokio::spawn(async move {
            if let Err(err) = serving.await {
                tracing::warn!(error = %err, "metrics endpoint stopped");
            }
        });
    }
    tracing::info!(
        role,
        version = testbed_build_info::VERSION,
        revision = testbed_build_info::GIT_REVISION,
        arch = testbed_build_info::arch(),
        target = testbed_build_info::TARGET,
        grpc_addr = %listeners.grpc_addr,
        metrics_addr = %listeners.metrics_addr,
        store = log.map_or("none", AnyLog::backend),
        partitions = log.map_or(0, |log| log.partitions()),
        "testbed {role} listening on {}",
        listeners.grpc_addr
    );
    Ok(listeners)
}
