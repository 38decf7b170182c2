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
//!
//! One layer and one service for both ends ([`CallLayer`], [`CallService`],
//! generic over the [`Side`]); one clock and one recording of a call
//! (`Measured`). What stays per side is its `call`: which calls are traced,
//! the trace context extracted or injected, the span entered or not around
//! the inner call, the code of a failure below gRPC. Each side also writes
//! its own `info_span!`: a span's name and fields are static metadata fixed
//! where the macro is written, so the two declarations (different names,
//! kinds, and the server's `otel.status_code`) cannot be one generic one.

use std::future::Future;
use std::marker::PhantomData;
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

/// One call being measured: what its histogram point needs.
struct Measured {
    duration: ExemplarHistogram,
    started: Instant,
    service: String,
    method: String,
}

impl Measured {
    /// Starts the clock of a call to `service`/`method`.
    fn start(duration: &ExemplarHistogram, service: String, method: String) -> Self {
        Self {
            duration: duration.clone(),
            started: Instant::now(),
            service,
            method,
        }
    }

    /// Awaits `future` inside `span`; when the response starts, records its
    /// status code on the span (and, with `mark_error`, `otel.status_code`
    /// ERROR when it is not OK) and the call in the histogram with the
    /// semantic-convention attributes (inside the span, which the exemplar
    /// refers to). `transport_failure` is the code of a call that failed
    /// below gRPC.
    fn finish<F, R, E>(
        self,
        future: F,
        span: tracing::Span,
        transport_failure: i64,
        mark_error: bool,
    ) -> Pin<Box<dyn Future<Output = Result<http::Response<R>, E>> + Send>>
    where
        F: Future<Output = Result<http::Response<R>, E>> + Send + 'static,
    {
        Box::pin(
            async move {
                let result = future.await;
                let code = status_code(&result, transport_failure);
                let current = tracing::Span::current();
                current.record("rpc.grpc.status_code", code);
                if mark_error && code != 0 {
                    current.record("otel.status_code", "ERROR");
                }
                self.duration.record(
                    self.started.elapsed().as_secs_f64(),
                    &[
                        KeyValue::new("rpc.system", "grpc"),
                        KeyValue::new("rpc.service", self.service),
                        KeyValue::new("rpc.method", self.method),
                        KeyValue::new("rpc.grpc.status_code", code),
                    ],
                );
                result
            }
            .instrument(span),
        )
    }
}

/// What a call returns from [`Side::call`]: the inner service's response,
/// boxed.
pub type CallFuture<S, B> = Pin<
    Box<
        dyn Future<
                Output = Result<
                    <S as tower_service::Service<http::Request<B>>>::Response,
                    <S as tower_service::Service<http::Request<B>>>::Error,
                >,
            > + Send,
    >,
>;

/// Which end of a call a layer measures: [`Server`] or [`Client`]. The
/// layer and its service are one code for both ([`CallLayer`],
/// [`CallService`]); a side says what its histogram is and how it traces
/// one call, which is where the two ends differ (which calls are traced,
/// context extracted or injected, the code of a failure below gRPC, the
/// span's error status).
pub trait Side: Clone + Send + Sync + 'static {
    /// The histogram's name (`rpc.server.duration`, `rpc.client.duration`).
    const DURATION: &'static str;
    /// The histogram's description.
    const DESCRIPTION: &'static str;

    /// Calls `inner` with `request` inside the call's span, and records the
    /// call in `duration` when its response starts.
    fn call<S, B, R>(
        inner: &mut S,
        request: http::Request<B>,
        duration: &ExemplarHistogram,
    ) -> CallFuture<S, B>
    where
        S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Send,
        S::Future: Send + 'static;
}

/// Adds a [`CallService`] of side `D` around a gRPC service.
#[derive(Debug, Clone)]
pub struct CallLayer<D> {
    duration: ExemplarHistogram,
    side: PhantomData<D>,
}

impl<D: Side> Default for CallLayer<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Side> CallLayer<D> {
    /// A layer recording into the global meter provider.
    pub fn new() -> Self {
        Self {
            duration: duration_histogram(D::DURATION, D::DESCRIPTION),
            side: PhantomData,
        }
    }
}

impl<S, D: Side> tower_layer::Layer<S> for CallLayer<D> {
    type Service = CallService<S, D>;

    fn layer(&self, inner: S) -> Self::Service {
        CallService {
            inner,
            duration: self.duration.clone(),
            side: PhantomData,
        }
    }
}

/// The service [`CallLayer`] produces.
#[derive(Debug, Clone)]
pub struct CallService<S, D> {
    inner: S,
    duration: ExemplarHistogram,
    side: PhantomData<D>,
}

impl<S, B, R, D: Side> tower_service::Service<http::Request<B>> for CallService<S, D>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CallFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        D::call(&mut self.inner, request, &self.duration)
    }
}

/// The server side: a span of kind server per call, continuing the
/// caller's W3C context, and the `rpc.server.duration` histogram; health
/// and reflection calls pass untraced.
#[derive(Debug, Clone, Copy)]
pub struct Server;

/// Traces and measures every RPC a server answers.
pub type RpcLayer = CallLayer<Server>;
/// The service [`RpcLayer`] produces.
pub type RpcService<S> = CallService<S, Server>;

/// Whether a path is a probe or tooling call that is not traced.
fn is_infrastructure(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl Side for Server {
    const DURATION: &'static str = "rpc.server.duration";
    const DESCRIPTION: &'static str = "Duration of inbound RPCs, to the response headers";

    fn call<S, B, R>(
        inner: &mut S,
        request: http::Request<B>,
        duration: &ExemplarHistogram,
    ) -> CallFuture<S, B>
    where
        S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Send,
        S::Future: Send + 'static,
    {
        let path = request.uri().path().to_owned();
        if is_infrastructure(&path) {
            return Box::pin(inner.call(request));
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
        let call = Measured::start(duration, service, method);
        // Entered, so what the layers below do before their first await is
        // inside the call's span.
        let future = {
            let _entered = span.enter();
            inner.call(request)
        };
        // A failure below gRPC: UNKNOWN; a failed call's span is an error.
        call.finish(future, span, 2, true)
    }
}

/// The client side: a span of kind client per call, W3C context injected
/// into the request headers, and the `rpc.client.duration` histogram
/// (seconds, to the response headers) with the same attributes as the
/// server side.
#[derive(Debug, Clone, Copy)]
pub struct Client;

/// Traces and measures every RPC a client sends.
pub type RpcClientLayer = CallLayer<Client>;
/// The service [`RpcClientLayer`] produces.
pub type RpcClientService<S> = CallService<S, Client>;

impl Side for Client {
    const DURATION: &'static str = "rpc.client.duration";
    const DESCRIPTION: &'static str = "Duration of outbound RPCs, to the response headers";

    fn call<S, B, R>(
        inner: &mut S,
        mut request: http::Request<B>,
        duration: &ExemplarHistogram,
    ) -> CallFuture<S, B>
    where
        S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Send,
        S::Future: Send + 'static,
    {
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
        let call = Measured::start(duration, service, method);
        let future = inner.call(request);
        // Unreachable or broken transport: UNAVAILABLE.
        call.finish(future, span, 14, false)
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
