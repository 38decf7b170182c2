//! [`Health`]: the process's `grpc.health.v1` statuses, as the server and
//! the dependency watchers set them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Health statuses of one process, shared by the server and the services
/// whose dependencies come and go.
///
/// The overall status `""` means "the process is up and not shutting down"
/// (the liveness question); each served service's full name means "this
/// service can do its work now" (the readiness question: it goes
/// `NOT_SERVING` while a dependency it cannot work without is down). Once
/// shutdown starts, every status is `NOT_SERVING` and stays so.
#[derive(Debug, Clone)]
pub struct Health {
    reporter: HealthReporter,
    shutting_down: Arc<AtomicBool>,
}

impl Health {
    /// Statuses reported through `reporter`, none shutting down yet.
    pub(crate) fn new(reporter: HealthReporter) -> Self {
        Self {
            reporter,
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Reports whether `service` (a full gRPC service name) can serve now.
    /// Ignored once shutdown has started, so a dependency coming back cannot
    /// flip a draining process back to `SERVING`.
    pub async fn set_serving(&self, service: &str, serving: bool) {
        if self.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(service, status).await;
    }

    /// Marks every status `NOT_SERVING` for good: the first step of shutdown.
    pub(crate) async fn begin_shutdown(&self, services: &[&'static str]) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for service in services.iter().copied().chain([""]) {
            self.reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
    }
}
