//! [`ShedLayer`]: the process-wide concurrency limit with load shedding.
//!
//! At most `--max-concurrent-requests` calls are in their handlers at once,
//! over every connection; a call past that is answered at once with
//! RESOURCE_EXHAUSTED and a RetryInfo, never queued, so overload shows as
//! fast refusals instead of growing memory and latency. A call holds its
//! permit until its response headers (a stream's body then runs without
//! one: its cost is bounded per connection by `--max-concurrent-streams`).
//! Health checks are never shed: probes must see the process answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The retry delay a shed call is told.
const SHED_RETRY_AFTER: Duration = Duration::from_millis(100);
/// Paths never shed.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Adds [`ShedService`] around the routes.
#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl ShedLayer {
    /// At most `limit` calls at once.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> tower_layer::Layer<S> for ShedLayer {
    type Service = ShedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ShedService {
            inner,
            permits: Arc::clone(&self.permits),
            limit: self.limit,
        }
    }
}

/// See [`ShedLayer`].
#[derive(Debug, Clone)]
pub struct ShedService<S> {
    inner: S,
    permits: Arc<Semaphore>,
    limit: usize,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The answer to a shed call.
pub fn shed_status(limit: usize) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "server overloaded: {limit} calls in progress (--max-concurrent-requests); retry later"
        ),
        ErrorDetails::with_retry_info(Some(SHED_RETRY_AFTER)),
    )
}

impl<S, ReqBody> tower_service::Service<http::Request<ReqBody>> for ShedService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        if req.uri().path().starts_with(HEALTH_PREFIX) {
            return Box::pin(self.inner.call(req));
        }
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            let status = shed_status(self.limit);
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let called = self.inner.call(req);
        Box::pin(async move {
            let response = called.await;
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower_layer::Layer as _;
    use tower_service::Service as _;

    use super::*;

    /// A handler that stays in progress until told.
    #[derive(Clone)]
    struct Held(Arc<tokio::sync::Notify>);

    impl tower_service::Service<http::Request<()>> for Held {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let release = Arc::clone(&self.0);
            Box::pin(async move {
                release.notified().await;
                Ok(http::Response::new(Body::empty()))
            })
        }
    }

    fn call(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<&str> {
        response.headers().get("grpc-status")?.to_str().ok()
    }

    /// With a limit of 1: the second call is shed at once (code 8) while the
    /// first is in progress, health is never shed, and once the first ends
    /// the next call is admitted.
    #[tokio::test]
    async fn sheds_past_the_limit_never_health() {
        let release = Arc::new(tokio::sync::Notify::new());
        let mut svc = ShedLayer::new(1).layer(Held(Arc::clone(&release)));
        let first = tokio::spawn(svc.call(call("/testbed.v1.QueryService/A")));
        tokio::task::yield_now().await;
        let shed = svc.call(call("/testbed.v1.QueryService/B")).await.unwrap();
        assert_eq!(grpc_status(&shed), Some("8"));
        let health = svc.call(call("/grpc.health.v1.Health/Check"));
        let waited = tokio::time::timeout(Duration::from_millis(20), health).await;
        assert!(waited.is_err(), "health was answered without its handler");
        release.notify_one();
        let done = first.await.unwrap().unwrap();
        assert_eq!(grpc_status(&done), None);
        let third = svc.call(call("/testbed.v1.QueryService/C"));
        let waited = tokio::time::timeout(Duration::from_millis(20), third).await;
        assert!(
            waited.is_err(),
            "the third call was shed after the first ended"
        );
    }

    /// A shed call is RESOURCE_EXHAUSTED with a RetryInfo.
    #[test]
    fn shed_status_has_retry_info() {
        let status = shed_status(8);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(SHED_RETRY_AFTER)
        );
    }
}
