//! `GET /metrics`: every instrument, in the Prometheus text format or, when
//! the scraper asks for it, in OpenMetrics with exemplars.
//!
//! Content negotiation: the `Accept` media range with the highest `q`
//! (the first listed on a tie) decides. `application/openmetrics-text`
//! (version 1.0.0 or unversioned) gets OpenMetrics 1.0.0 with exemplars on
//! histogram buckets (see [`crate::exemplars`]); anything else, including no
//! `Accept` at all or `*/*`, gets the classic text format 0.0.4 exactly as
//! the `prometheus` crate writes it. Prometheus lists OpenMetrics first by
//! default, so it receives exemplars; `curl` and `promtool check metrics`
//! pipelines receive the classic text.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder as _, TextEncoder};
use tokio::net::TcpListener;

use std::sync::Arc;

use crate::exemplars::Exemplars;
use crate::openmetrics;
use crate::status::StatusSource;

/// Serves `/metrics` (and `/` with a pointer to it) from `registry`, with the
/// exemplars of every [`crate::exemplars::ExemplarHistogram`], on `listener`
/// until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: prometheus::Registry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_metrics_and_status(listener, registry, None, shutdown).await
}

/// As [`serve_metrics`], and with a `status` source, the live status page
/// at `/` and its JSON at `/status.json` ([`crate::status`]).
pub async fn serve_metrics_and_status(
    listener: TcpListener,
    registry: prometheus::Registry,
    status: Option<Arc<dyn StatusSource>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let render = move |headers: HeaderMap| {
        let registry = registry.clone();
        async move {
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            metrics_response(&registry, Exemplars::global(), wants_openmetrics(accept))
        }
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(render));
    let app = match status {
        Some(source) => {
            let json_source = source.clone();
            app.route(
                "/",
                axum::routing::get(move || {
                    let source = source.clone();
                    async move {
                        let page = source.snapshot().await;
                        axum::response::Html(crate::status::render(&page))
                    }
                }),
            )
            .route(
                "/status.json",
                axum::routing::get(move || {
                    let source = json_source.clone();
                    async move {
                        let page = source.snapshot().await;
                        let body = serde_json::to_string(&page).unwrap_or_default();
                        ([(header::CONTENT_TYPE, "application/json")], body)
                    }
                }),
            )
        }
        None => app.route(
            "/",
            axum::routing::get(|| async { "testbed: metrics at /metrics\n" }),
        ),
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The body and content type of one scrape.
fn metrics_response(
    registry: &prometheus::Registry,
    exemplars: &Exemplars,
    openmetrics: bool,
) -> Response {
    let families = registry.gather();
    if openmetrics {
        let body = openmetrics::render(&families, &exemplars.snapshot());
        return ([(header::CONTENT_TYPE, openmetrics::CONTENT_TYPE)], body).into_response();
    }
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&families, &mut body) {
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

/// Whether an `Accept` header prefers OpenMetrics 1.0.0 over everything
/// else it lists (highest `q`, the first listed on a tie).
fn wants_openmetrics(accept: &str) -> bool {
    let mut best: Option<(f32, bool)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        if media.is_empty() {
            continue;
        }
        let (mut q, mut version) = (1.0f32, None);
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "q" => q = value.trim().parse().unwrap_or(0.0),
                "version" => version = Some(value.trim().trim_matches('"').to_owned()),
                _ => {}
            }
        }
        let is_openmetrics = media == "application/openmetrics-text"
            && version.as_deref().is_none_or(|v| v == "1.0.0");
        if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
            best = Some((q, is_openmetrics));
        }
    }
    best.is_some_and(|(_, openmetrics)| openmetrics)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// What Prometheus, curl and browsers send, and what each gets.
    #[test]
    fn negotiation() {
        for (accept, want) in [
            // Prometheus 2.x (any, exemplar storage or not).
            (
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                true,
            ),
            // Prometheus 3.x defaults.
            (
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
                 application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;\
                 escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
                true,
            ),
            // Prometheus with scrape_protocols: [PrometheusText0.0.4] first.
            (
                "text/plain;version=0.0.4;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,*/*;q=0.1",
                false,
            ),
            ("application/openmetrics-text", true),
            ("application/openmetrics-text; version=0.0.1", false),
            ("application/openmetrics-text;q=0", false),
            ("text/plain, application/openmetrics-text", false),
            ("*/*", false),
            ("", false),
            ("text/html,application/xhtml+xml,*/*;q=0.8", false),
        ] {
            assert_eq!(wants_openmetrics(accept), want, "{accept}");
        }
    }

    fn registry_with_counter() -> prometheus::Registry {
        let registry = prometheus::Registry::new();
        let counter = prometheus::Counter::new("hits_total", "Hits").unwrap();
        counter.inc();
        registry.register(Box::new(counter)).unwrap();
        registry
    }

    async fn body(response: Response) -> (String, String) {
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (content_type, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Classic text stays byte for byte what the prometheus crate writes;
    /// OpenMetrics comes with its content type and `# EOF`.
    #[tokio::test]
    async fn both_formats() {
        let registry = registry_with_counter();
        let exemplars = Exemplars::default();
        let (classic_type, classic) = body(metrics_response(&registry, &exemplars, false)).await;
        assert_eq!(classic_type, "text/plain; version=0.0.4");
        assert_eq!(
            classic,
            "# HELP hits_total Hits\n# TYPE hits_total counter\nhits_total 1\n"
        );
        let (om_type, om) = body(metrics_response(&registry, &exemplars, true)).await;
        assert_eq!(
            om_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert_eq!(
            om,
            "# HELP hits Hits\n# TYPE hits counter\nhits_total 1.0\n# EOF\n"
        );
    }
}
