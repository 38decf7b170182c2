//! SIGTERM and SIGINT into the one shutdown token.

use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGTERM or SIGINT. A second signal while
/// shutdown is under way exits at once with status 130, for an operator who
/// does not want to wait out the grace period.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    let name = wait_for_signal().await;
    tracing::info!(signal = name, "shutdown requested");
    shutdown.cancel();
    let name = wait_for_signal().await;
    tracing::warn!(signal = name, "second signal: exiting without waiting");
    std::process::exit(130);
}

/// Resolves with the signal's name on the next SIGTERM or SIGINT.
pub async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            // Without handlers a signal would kill the process uncleanly;
            // ctrl_c is the portable fallback.
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}
