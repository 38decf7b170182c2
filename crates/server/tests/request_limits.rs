//! The request limits of [`GrpcServer`] on a real server over loopback, with
//! a handler slow on purpose: `--request-timeout` ends a call that is not at
//! its response headers in time, and `--max-concurrent-requests` sheds the
//! call past the limit while the first is in its handler.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use testbed_server::{CancellationToken, GrpcServer, Limits};
use tonic::body::Body;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A service whose every call takes 5 s before it answers OK; `entered`
/// turns true once a call is in the handler.
#[derive(Clone, Default)]
struct Slow {
    entered: Arc<AtomicBool>,
}

impl NamedService for Slow {
    const NAME: &'static str = "test.Slow";
}

impl tower_service::Service<http::Request<Body>> for Slow {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<Body>) -> Self::Future {
        self.entered.store(true, Ordering::SeqCst);
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(Status::ok("").into_http())
        })
    }
}

/// Serves [`Slow`] under `limits` on a free port; returns a channel to it
/// and the token that stops it.
async fn serve(limits: Limits, slow: Slow) -> (Channel, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = GrpcServer::new();
    server.set_limits(limits);
    server.add_service(slow).await;
    let token = CancellationToken::new();
    tokio::spawn(server.serve(listener, token.clone(), Duration::from_secs(1)));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (channel, token)
}

/// One call of `test.Slow/Call` (an empty message each way).
async fn call(channel: Channel) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(()),
        PathAndQuery::from_static("/test.Slow/Call"),
        tonic_prost::ProstCodec::<(), ()>::default(),
    )
    .await
    .map(|_| ())
}

/// --request-timeout 200ms: a call whose handler needs 5 s ends CANCELLED
/// after about 200 ms.
#[tokio::test]
async fn request_timeout_ends_slow_calls() {
    let limits = Limits {
        request_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let (channel, token) = serve(limits, Slow::default()).await;
    let started = Instant::now();
    let status = call(channel).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert!(
        took >= Duration::from_millis(180) && took < Duration::from_secs(2),
        "{took:?}"
    );
    token.cancel();
}

/// --max-concurrent-requests 1: while one call is in its handler, the next
/// is refused RESOURCE_EXHAUSTED at once instead of waiting its turn.
#[tokio::test]
async fn the_call_past_the_limit_is_shed_at_once() {
    let limits = Limits {
        max_concurrent_requests: 1,
        ..Limits::default()
    };
    let slow = Slow::default();
    let (channel, token) = serve(limits, slow.clone()).await;
    let first = tokio::spawn(call(channel.clone()));
    let deadline = Instant::now() + Duration::from_secs(3);
    while !slow.entered.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the first call never reached its handler"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let status = call(channel.clone()).await.unwrap_err();
    let shed = started.elapsed();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(shed < Duration::from_secs(1), "shed after {shed:?}");
    assert!(!first.is_finished(), "the first call was not held");
    first.abort();
    token.cancel();
}
