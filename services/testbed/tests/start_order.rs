//! Any process may start first: `testbed query` on a Redis where no worker
//! has started (no streams, no consumer group) answers what is true, zero
//! counts and empty lists, never INTERNAL; and again after that Redis comes
//! back empty.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Testbed;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_proto::v1::{
    GetPipelineStatsRequest, GetTokenUsageRequest, ListDevicesRequest, TopDevicesRequest,
    TopMetric, WatchPipelineStatsRequest,
};
use testbed_test_support::RedisServer;
use tokio_stream::StreamExt as _;

/// Every read RPC on an empty prefix: OK, with nothing in it.
async fn reads_answer_empty(query: &Testbed) {
    let mut client = QueryServiceClient::new(query.channel().await);
    let stats = client
        .get_pipeline_stats(GetPipelineStatsRequest::default())
        .await
        .expect("GetPipelineStats before any worker")
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(
        (
            stats.ingested,
            stats.processed,
            stats.pending,
            stats.backlog
        ),
        (0, 0, 0, 0)
    );
    let mut watch = client
        .watch_pipeline_stats(WatchPipelineStatsRequest::default())
        .await
        .expect("WatchPipelineStats before any worker")
        .into_inner();
    let first = watch.next().await.unwrap().expect("first watch message");
    assert_eq!(first.stats.unwrap().pending, 0);
    let devices = client
        .list_devices(ListDevicesRequest::default())
        .await
        .expect("ListDevices before any worker")
        .into_inner();
    assert!(devices.devices.is_empty());
    let tokens = client
        .get_token_usage(GetTokenUsageRequest::default())
        .await
        .expect("GetTokenUsage before any worker")
        .into_inner();
    assert!(tokens.groups.is_empty());
    let top = client
        .top_devices(TopDevicesRequest {
            metric: TopMetric::GpuUtilization as i32,
            ..Default::default()
        })
        .await
        .expect("TopDevices before any worker")
        .into_inner();
    assert!(top.devices.is_empty());
}

/// The query service started alone on a fresh Redis, then on the same
/// Redis restarted empty: every read answers OK and empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_started_first_answers_zeros() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let query = Testbed::start(&["query", "--redis-url", &url, "--health-interval", "100ms"]);
    query.wait_serving("testbed.v1.QueryService").await;
    reads_answer_empty(&query).await;

    redis.restart_empty();
    // The store is back once a read is no longer UNAVAILABLE (the query
    // reconnects on its own; nothing restarts it).
    let mut client = QueryServiceClient::new(query.channel().await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match client
            .get_pipeline_stats(GetPipelineStatsRequest::default())
            .await
        {
            Err(status) if status.code() == tonic::Code::Unavailable => {
                assert!(std::time::Instant::now() < deadline, "{status:?}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            _ => break,
        }
    }
    reads_answer_empty(&query).await;
}
