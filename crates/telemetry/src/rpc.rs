//! A tower layer that traces and measures every RPC, following the
//! OpenTelemetry RPC semantic conventions: a server span named
//! `package.Service/Method` with `rpc.system=grpc`, `rpc.service`,
//! `rpc.method` and `rpc.grpc.status_code`, continuing the caller's W3C
//! trace context; and the `rpc.server.duration` histogram (seconds) with
//! the same attributes, whose buckets carry the trace id of a recent call as
//! an exemplar on `/metrics` (see [`crate::exemplars`]). Health and
//! reflection calls are neither traced nor measured: probes every few
//! seconds would drown the real traffic.
//!
//! The status is read from the response headers (where tonic puts it for
//! every error and for trailers-only responses); a successful stream's
//! final status travels in trailers after the body, so streams are recorded
//! when their response starts, as OK.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::KeyValue;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::exemplars::ExemplarHistogram;

/// Bucket boundaries of the RPC duration histograms, in seconds.
const RPC_BOUNDARIES: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// An RPC duration histogram (`rpc.server.duration` or `rpc.client.duration`,
/// exported as `rpc_{server,client}_duration_seconds`), with exemplars: calls
/// are recorded inside their span, so each bucket shows a trace of its own.
fn duration_histogram(name: &'static str, description: &'static str) -> ExemplarHistogram {
    ExemplarHistogram::seconds(
        &opentelemetry::global::meter("testbed"),
        name,
        description,
        &RPC_BOUNDARIES,
    )
}

/// `package.Service` and `Method` of a gRPC path.
fn split_path(path: &str) -> (String, String) {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    (service.to_owned(), method.to_owned())
}

/// The gRPC status code of a response as far as its headers tell (errors
/// and trailers-only responses carry it there), or `on_error` when the
/// call failed below gRPC.
fn status_code<R, E>(result: &Result<http::Response<R>, E>, on_error: i64) -> i64 {
    match result {
        Ok(response) => response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0),
        Err(_) => on_error,
    }
}

/// Records one call in `histogram` with the semantic-convention attributes
/// (inside the call's span, which the exemplar refers to).
fn record(
    histogram: &ExemplarHistogram,
    started: Instant,
    service: String,
    method: String,
    code: i64,
) {
    histogram.record(
        started.elapsed().as_secs_f64(),
        &[
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service),
            KeyValue::new("rpc.method", method),
            KeyValue::new("rpc.grpc.status_code", code),
        ],
    );
}

/// Adds [`RpcService`] around a gRPC service.
#[derive(Debug, Clone)]
pub struct RpcLayer {
    duration: ExemplarHistogram,
}

impl Default for RpcLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RpcLayer {
    /// A layer recording into the global meter provider.
    pub fn new() -> Self {
        Self {
            duration: duration_histogram(
                "rpc.server.duration",
                "Duration of inbound RPCs, to the response headers",
            ),
        }
    }
}

impl<S> tower_layer::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            duration: self.duration.clone(),
        }
    }
}

/// The service [`RpcLayer`] produces.
#[derive(Debug, Clone)]
pub struct RpcService<S> {
    inner: S,
    duration: ExemplarHistogram,
}

/// Whether a path is a probe or tooling call that is not traced.
fn is_infrastructure(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, B, R> tower_service::Service<http::Request<B>> for RpcService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        if is_infrastructure(&path) {
            return Box::pin(self.inner.call(request));
        }
        let (service, method) = split_path(&path);
        let span = tracing::info_span!(
            "rpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let parent = crate::propagation::extract_headers(request.headers());
        let _ = span.set_parent(parent);
        let started = Instant::now();
        let duration = self.duration.clone();
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let result = future.await;
                // A failure below gRPC: UNKNOWN.
                let code = status_code(&result, 2);
                let current = tracing::Span::current();
                current.record("rpc.grpc.status_code", code);
                if code != 0 {
                    current.record("otel.status_code", "ERROR");
                }
                record(&duration, started, service, method, code);
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probes and reflection are not traced; services are.
    #[test]
    fn infrastructure_paths() {
        assert!(is_infrastructure("/grpc.health.v1.Health/Check"));
        assert!(is_infrastructure(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_infrastructure("/testbed.v1.IngestService/Publish"));
    }
}

/// The client side: a span of kind client per call, W3C context injected
/// into the request headers, and the `rpc.client.duration` histogram
/// (seconds, to the response headers) with the same attributes as the
/// server side.
#[derive(Debug, Clone)]
pub struct RpcClientLayer {
    duration: ExemplarHistogram,
}

impl Default for RpcClientLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RpcClientLayer {
    /// A layer recording into the global meter provider.
    pub fn new() -> Self {
        Self {
            duration: duration_histogram(
                "rpc.client.duration",
                "Duration of outbound RPCs, to the response headers",
            ),
        }
    }
}

impl<S> tower_layer::Layer<S> for RpcClientLayer {
    type Service = RpcClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcClientService {
            inner,
            duration: self.duration.clone(),
        }
    }
}

/// The service [`RpcClientLayer`] produces.
#[derive(Debug, Clone)]
pub struct RpcClientService<S> {
    inner: S,
    duration: ExemplarHistogram,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for RpcClientService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let (service, method) = split_path(&path);
        let span = tracing::info_span!(
            "rpc client",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        span.in_scope(|| crate::propagation::inject_headers(request.headers_mut()));
        let started = Instant::now();
        let duration = self.duration.clone();
        let future = self.inner.call(request);
        Box::pin(
            async move {
                let result = future.await;
                // Unreachable or broken transport: UNAVAILABLE.
                let code = status_code(&result, 14);
                tracing::Span::current().record("rpc.grpc.status_code", code);
                record(&duration, started, service, method, code);
                result
            }
            .instrument(span),
        )
    }
}
