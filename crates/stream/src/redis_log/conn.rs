//! Connections: one reconnecting connection shared by all non-blocking
//! calls, and dedicated ones for blocking reads.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::{StoreArgs, StoreError};

/// A single-node or cluster connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Opens a connection to a single Redis that does not reconnect by itself
/// (unlike [`connect`]'s): for state that lives on one connection, such as
/// `WATCH`, which a silent reconnect would drop while later commands went
/// on. Once it fails, the caller drops it and opens another.
pub(crate) async fn connect_dedicated(
    args: &StoreArgs,
    response_timeout: Duration,
) -> Result<redis::aio::MultiplexedConnection, StoreError> {
    let url = args
        .redis_url
        .as_deref()
        .ok_or_else(|| StoreError::Unavailable("no --redis-url".to_owned()))?;
    let connect_timeout = args.redis_timeout.max(Duration::from_millis(100));
    let client = redis::Client::open(url).map_err(StoreError::from_redis)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(StoreError::from_redis)
}

/// Opens a connection whose calls time out after `response_timeout`.
pub(crate) async fn connect(
    args: &StoreArgs,
    response_timeout: Duration,
) -> Result<Conn, StoreError> {
    let url = args
        .redis_url
        .as_deref()
        .ok_or_else(|| StoreError::Unavailable("no --redis-url".to_owned()))?;
    let connect_timeout = args.redis_timeout.max(Duration::from_millis(100));
    let attempt = async {
        if args.redis_cluster {
            let seeds: Vec<&str> = url.split(',').collect();
            let client = redis::cluster::ClusterClient::builder(seeds)
                .connection_timeout(connect_timeout)
                .response_timeout(response_timeout)
                .retries(2)
                .build()
                .map_err(StoreError::from_redis)?;
            client
                .get_async_connection()
                .await
                .map(Conn::Cluster)
                .map_err(StoreError::from_redis)
        } else {
            let client = redis::Client::open(url).map_err(StoreError::from_redis)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(response_timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            ConnectionManager::new_with_config(client, config)
                .await
                .map(Conn::Single)
                .map_err(StoreError::from_redis)
        }
    };
    tokio::time::timeout(connect_timeout, attempt)
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "connecting to Redis timed out after {:?}",
                connect_timeout
            ))
        })?
}
