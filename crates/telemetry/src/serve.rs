//! `GET /metrics`: the Prometheus text exposition of every instrument.

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus::{Encoder as _, TextEncoder};
use tokio::net::TcpListener;

/// Serves `/metrics` (and `/` with a pointer to it) from `registry` on
/// `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: prometheus::Registry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let render = move || {
        let registry = registry.clone();
        async move {
            let mut body = Vec::new();
            let encoder = TextEncoder::new();
            match encoder.encode(&registry.gather(), &mut body) {
                Ok(()) => (
                    [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
                    body,
                )
                    .into_response(),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot render /metrics");
                    (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n").into_response()
                }
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(render))
        .route(
            "/",
            axum::routing::get(|| async { "testbed: metrics at /metrics\n" }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
