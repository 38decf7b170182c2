//! Health that follows a dependency: `NOT_SERVING` while it is down,
//! `SERVING` again as soon as it answers, without a restart.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// Probes a dependency every `interval` until `shutdown`, and sets the
/// health of `services` from the answer. Logs each transition once.
pub async fn watch_dependency<P, Fut>(
    name: &'static str,
    health: Health,
    services: Vec<&'static str>,
    interval: Duration,
    shutdown: CancellationToken,
    mut probe: P,
) where
    P: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let mut up: Option<bool> = None;
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            result = probe() => result,
        };
        let now_up = result.is_ok();
        if up != Some(now_up) {
            match &result {
                Ok(()) => tracing::info!(dependency = name, "dependency reachable: SERVING"),
                Err(err) => {
                    tracing::warn!(dependency = name, error = %err, "dependency down: NOT_SERVING")
                }
            }
            for service in &services {
                health.set_serving(service, now_up).await;
            }
            up = Some(now_up);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
