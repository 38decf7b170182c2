//! Connections: one reconnecting connection shared by all non-blocking
//! calls, and dedicated ones for blocking reads.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionInfo, IntoConnectionInfo as _, Pipeline, RedisFuture, Value};

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

/// The connection settings of one `url`, with `--redis-username` and the
/// password of `--redis-password-file` (read now) when given.
fn connection_info(args: &StoreArgs, url: &str) -> Result<ConnectionInfo, StoreError> {
    let info = url.into_connection_info().map_err(StoreError::from_redis)?;
    let mut redis = info.redis_settings().clone();
    if let Some(username) = &args.redis_username {
        redis = redis.set_username(username);
    }
    if let Some(password) = args.redis_password()? {
        redis = redis.set_password(password);
    }
    Ok(info.set_redis_settings(redis))
}

/// A client of the single Redis at `url`, over TLS with the certificates
/// of `--redis-tls-*` when given (`rediss://` alone uses the system's
/// roots).
fn client(args: &StoreArgs, url: &str) -> Result<redis::Client, StoreError> {
    let info = connection_info(args, url)?;
    match args.redis_tls()? {
        Some(certs) => redis::Client::build_with_tls(info, certs),
        None => redis::Client::open(info),
    }
    .map_err(StoreError::from_redis)
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
    let client = client(args, url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(StoreError::from_redis)
}

/// The cluster client's waits before it retries a call itself (after
/// `CLUSTERDOWN`, `TRYAGAIN`, `MASTERDOWN`, or no node for a slot): a
/// random time from the minimum to `factor * 2^retry`, capped. The
/// library's defaults wait 1.28 s at least, longer than the whole call
/// may take (`--redis-timeout`, 500 ms): a call caught by a failover slept
/// past the promotion of the replica, and the appends of its partition
/// with it (the publishing gap of the failover fault test was 0.4-0.6 s
/// longer than the promotion). Here the two retries wait 5-20 ms and
/// 5-40 ms: a call still failing after them fails at once, as
/// UNAVAILABLE, and its caller (the simulator, the client library, the
/// worker's read loop) retries with backoff of its own.
const CLUSTER_RETRY_WAIT_MIN_MS: u64 = 5;
const CLUSTER_RETRY_WAIT_MAX_MS: u64 = 100;
const CLUSTER_RETRY_WAIT_FACTOR_MS: u64 = 10;

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
            let seeds = url
                .split(',')
                .map(|seed| connection_info(args, seed))
                .collect::<Result<Vec<_>, _>>()?;
            let mut builder = redis::cluster::ClusterClient::builder(seeds)
                .connection_timeout(connect_timeout)
                .response_timeout(response_timeout)
                .retries(2)
                .min_retry_wait(CLUSTER_RETRY_WAIT_MIN_MS)
                .max_retry_wait(CLUSTER_RETRY_WAIT_MAX_MS)
                .retry_wait_formula(CLUSTER_RETRY_WAIT_FACTOR_MS, 2);
            if let Some(certs) = args.redis_tls()? {
                builder = builder.certs(certs);
            }
            let client = builder.build().map_err(StoreError::from_redis)?;
            client
                .get_async_connection()
                .await
                .map(Conn::Cluster)
                .map_err(StoreError::from_redis)
        } else {
            let client = client(args, url)?;
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
    match tokio::time::timeout(connect_timeout, attempt).await {
        Ok(connected) => connected,
        Err(_) => Err(match diagnosed(args).await {
            // Wrong credentials stay wrong: not a timeout to retry.
            Some(Diagnosis::Config(why)) => StoreError::Config(why),
            Some(Diagnosis::Cause(why)) => StoreError::Unavailable(format!(
                "connecting to Redis timed out after {connect_timeout:?}: {why}"
            )),
            None => StoreError::Unavailable(format!(
                "connecting to Redis timed out after {connect_timeout:?}"
            )),
        }),
    }
}

/// How long a diagnosis of a failed connect ([`why_not_connected`]) is
/// reused: during an outage every reconnect times out, and diagnosing each
/// again would make each take twice `--redis-timeout`; once per this long
/// is enough to name a cause that changes (a fixed certificate, a port
/// opened).
const DIAGNOSIS_REUSE: Duration = Duration::from_secs(10);

/// What [`why_not_connected`] found, kept apart from the error it came as
/// (a `StoreError` is not `Clone`, and the last one is reused).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Diagnosis {
    /// Wrong credentials or certificates: a configuration error.
    Config(String),
    /// Any other cause, to name in the timeout's message.
    Cause(String),
}

/// The last diagnosis: when, of which URL, and what it found.
static LAST_DIAGNOSIS: std::sync::Mutex<Option<(std::time::Instant, String, Option<Diagnosis>)>> =
    std::sync::Mutex::new(None);

/// [`why_not_connected`], or its result of less than [`DIAGNOSIS_REUSE`]
/// ago for the same URL.
async fn diagnosed(args: &StoreArgs) -> Option<Diagnosis> {
    let url = args.redis_url.clone().unwrap_or_default();
    let recent = LAST_DIAGNOSIS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .filter(|(at, of, _)| *of == url && at.elapsed() < DIAGNOSIS_REUSE)
        .map(|(_, _, found)| found.clone());
    if let Some(found) = recent {
        return found;
    }
    let found = why_not_connected(args).await.map(|err| match err {
        StoreError::Config(why) => Diagnosis::Config(why),
        StoreError::Unavailable(why) | StoreError::Protocol(why) => Diagnosis::Cause(why),
        other => Diagnosis::Cause(other.to_string()),
    });
    *LAST_DIAGNOSIS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some((std::time::Instant::now(), url, found.clone()));
    found
}

/// Why a single Redis refuses connections, or `None` when one plain
/// attempt does not fail either (or on Redis Cluster). The reconnecting
/// connection retries until its deadline, so its own error is lost; this
/// attempt names the cause a user must fix (a refused client certificate,
/// an untrusted server certificate, a wrong password, a closed port)
/// instead of a bare timeout. Runs only after a connect timed out.
async fn why_not_connected(args: &StoreArgs) -> Option<StoreError> {
    if args.redis_cluster {
        return None;
    }
    let timeout = args.redis_timeout.max(Duration::from_millis(100));
    let attempt = async {
        let mut conn = connect_dedicated(args, timeout).await?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(StoreError::from_redis)
    };
    tokio::time::timeout(timeout, attempt).await.ok()?.err()
}

/// The connection shared by all non-blocking calls: made on first use,
/// and on Redis Cluster made again after a call fails as unavailable.
///
/// Why: the cluster client routes single commands after `MOVED` and
/// refreshes its slot map then, but not a transaction (`MULTI`/`EXEC`,
/// the append path): after a failover its commands went on to the old
/// owner of the slots, were answered `MOVED` inside `EXECABORT`, and were
/// never re-routed; and it kept reconnecting to the dead master. A new
/// connection reads the slot map afresh from the seeds (any of them alive
/// will do), so the next call reaches the new owner. Calls failing at once
/// drop one connection only (each carries the generation it used), and
/// reconnecting is serialized. As a safety net for topology changes no
/// call trips over, `--redis-topology-refresh` also renews the connection
/// periodically in the background ([`SharedConn::renew`]). A single Redis
/// keeps its connection: `ConnectionManager` reconnects by itself.
pub(crate) struct SharedConn {
    slot: std::sync::RwLock<Option<(Conn, u64)>>,
    connecting: tokio::sync::Mutex<()>,
    next_generation: std::sync::atomic::AtomicU64,
}

impl SharedConn {
    /// No connection yet.
    pub(crate) fn new() -> Self {
        Self {
            slot: std::sync::RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            next_generation: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn current(&self) -> Option<(Conn, u64)> {
        self.slot.read().ok().and_then(|slot| slot.clone())
    }

    /// The connection and its generation, connecting if there is none.
    pub(crate) async fn get(&self, args: &StoreArgs) -> Result<(Conn, u64), StoreError> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let conn = connect(args, args.redis_timeout).await?;
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut slot) = self.slot.write() {
            *slot = Some((conn.clone(), generation));
        }
        Ok((conn, generation))
    }

    /// Connects afresh (a new slot map on Redis Cluster) and makes the new
    /// connection the current one; calls holding the old one finish on it.
    /// Serialized with reconnects after a failure.
    pub(crate) async fn renew(&self, args: &StoreArgs) -> Result<u64, StoreError> {
        let _connecting = self.connecting.lock().await;
        let conn = connect(args, args.redis_timeout).await?;
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut slot) = self.slot.write() {
            *slot = Some((conn, generation));
        }
        Ok(generation)
    }

    /// A call on generation `generation` failed with `err`: on Redis
    /// Cluster, an unavailable store drops that connection (if it is still
    /// the current one), so the next call connects afresh.
    pub(crate) fn failed(&self, generation: u64, err: &StoreError) {
        let Ok(mut slot) = self.slot.write() else {
            return;
        };
        let drop_it = matches!(err, StoreError::Unavailable(_))
            && matches!(&*slot, Some((Conn::Cluster(_), current)) if *current == generation);
        if drop_it {
            tracing::info!(error = %err, "Redis Cluster call failed; reconnecting to refresh the slot map");
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Args for a single Redis at a closed port: connecting is refused.
    fn closed_port() -> StoreArgs {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        StoreArgs {
            redis_url: Some(format!("redis://127.0.0.1:{port}")),
            ..StoreArgs::default()
        }
    }

    /// A diagnosis of the same URL is reused within [`DIAGNOSIS_REUSE`]
    /// (no second attempt: the seeded one comes back, kind and all), and
    /// made afresh once older.
    #[tokio::test]
    async fn a_diagnosis_is_reused_for_a_while() {
        let args = closed_port();
        let url = args.redis_url.clone().unwrap();
        let seed = |age: Duration| {
            let at = std::time::Instant::now().checked_sub(age).unwrap();
            *LAST_DIAGNOSIS.lock().unwrap() = Some((
                at,
                url.clone(),
                Some(Diagnosis::Config("seeded".to_owned())),
            ));
        };
        seed(Duration::ZERO);
        match diagnosed(&args).await {
            Some(Diagnosis::Config(why)) => assert_eq!(why, "seeded"),
            other => panic!("not the seeded diagnosis: {other:?}"),
        }
        seed(DIAGNOSIS_REUSE + Duration::from_secs(1));
        match diagnosed(&args).await {
            Some(Diagnosis::Cause(why)) => assert_ne!(why, "seeded"),
            other => panic!("not a fresh diagnosis of a closed port: {other:?}"),
        }
    }
}
