//! Reads: a device's statistics, the pipeline watch, a run's ledger, and a
//! unary publish with retries (the calls of the README's steps).
//!
//! Reads are retried like publishes ([`RetryPolicy::default`]): they change
//! nothing, so another attempt is always safe. Events are processed
//! asynchronously: a device is NOT_FOUND until a worker applied its events.

use std::future::Future;
use std::time::Duration;

use futures::Stream;
use testbed_proto::v1::{
    Event, GetDeviceStatsRequest, GetDeviceStatsResponse, GetRunStatsRequest, GetRunStatsResponse,
    PipelineStats, PublishRequest, PublishResponse, WatchPipelineStatsRequest,
};

use crate::{Client, RetryPolicy, with_retries};

fn duration(d: Option<Duration>) -> Option<prost_types::Duration> {
    d.and_then(|d| prost_types::Duration::try_from(d).ok())
}

/// One unary call, `call` on a clone of `client` with `request`, retried
/// per `policy` (each attempt under its timeout); the reply's message.
async fn retried<C, Q, R, F, Fut>(
    client: &C,
    policy: &RetryPolicy,
    request: Q,
    call: F,
) -> Result<R, tonic::Status>
where
    C: Clone,
    Q: Clone,
    F: Fn(C, tonic::Request<Q>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    with_retries(policy, || {
        call(client.clone(), policy.request(request.clone()))
    })
    .await
    .map(tonic::Response::into_inner)
}

impl Client {
    /// Publishes one batch with `Publish`, retried per `policy`. With a
    /// `producer_id` and a `sequence` above 0 the batch is deduplicated by
    /// those; otherwise by `event_id`. The reply's `rejections` list the
    /// events refused on their own (fix those, do not retry them); an
    /// error means nothing of the batch was appended (decode it with
    /// [`crate::ErrorDetails::from_status`]).
    pub async fn publish(
        &self,
        events: Vec<Event>,
        producer_id: &str,
        sequence: u64,
        policy: &RetryPolicy,
    ) -> Result<PublishResponse, tonic::Status> {
        let request = PublishRequest {
            events,
            producer_id: producer_id.to_owned(),
            sequence,
        };
        retried(
            &self.ingest,
            policy,
            request,
            |mut ingest, request| async move { ingest.publish(request).await },
        )
        .await
    }

    /// A device's labels, totals over `window` (server default 15 min when
    /// `None`) and per-minute series.
    pub async fn device_stats(
        &self,
        device_id: &str,
        window: Option<Duration>,
    ) -> Result<GetDeviceStatsResponse, tonic::Status> {
        let request = GetDeviceStatsRequest {
            device_id: device_id.to_owned(),
            window: duration(window),
        };
        let policy = RetryPolicy::default();
        retried(
            &self.query,
            &policy,
            request,
            |mut query, request| async move { query.get_device_stats(request).await },
        )
        .await
    }

    /// The delivery ledger of a run (events carrying `run_id`).
    pub async fn run_stats(&self, run_id: &str) -> Result<GetRunStatsResponse, tonic::Status> {
        let request = GetRunStatsRequest {
            run_id: run_id.to_owned(),
        };
        let policy = RetryPolicy::default();
        retried(
            &self.query,
            &policy,
            request,
            |mut query, request| async move { query.get_run_stats(request).await },
        )
        .await
    }

    /// The pipeline's figures, one right away and then one every
    /// `interval` (server default 1 s), each over `window` (default 5 min).
    /// Dropping the stream cancels the call.
    pub async fn watch_pipeline_stats(
        &self,
        interval: Option<Duration>,
        window: Option<Duration>,
    ) -> Result<impl Stream<Item = Result<PipelineStats, tonic::Status>> + use<>, tonic::Status>
    {
        use futures::StreamExt as _;
        let request = WatchPipelineStatsRequest {
            interval: duration(interval),
            window: duration(window),
        };
        let stream = with_retries(&RetryPolicy::default(), || {
            let mut query = self.query.clone();
            async move {
                query
                    .watch_pipeline_stats(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await?;
        Ok(stream.map(|m| m.map(|m| m.stats.unwrap_or_default())))
    }
}
