//! A Redis Cluster for the failover step: three masters and three
//! replicas on loopback, `--cluster-node-timeout` as given (1 s by
//! default: `--failover-node-timeout`), AOF with
//! `appendfsync always` (the setting the README recommends with
//! `--redis-wait-replicas`) and `repl-diskless-sync-delay 0`, joined by
//! `redis-cli --cluster create`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testbed_test_support::DURABLE_NODE;

use crate::error::{Context as _, Error, Result};
use crate::redis::{Redis, command_text};

/// Masters, each with one replica.
const MASTERS: usize = 3;

/// How often the cluster's state is polled while waiting.
const POLL: Duration = Duration::from_millis(20);

fn node_dir(dir: &Path, node: usize) -> PathBuf {
    dir.join(format!("node{node}"))
}

/// A running cluster; a killed node's slot is `None` (behind a lock, so a
/// node can be killed through a shared reference while the pipeline runs).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: std::sync::Mutex<Vec<Option<Redis>>>,
    ports: Vec<u16>,
    redis_server: PathBuf,
    dir: PathBuf,
    /// `--cluster-node-timeout`, ms.
    node_timeout_ms: String,
}

/// Every node's settings beyond the harness's own.
fn settings(timeout: &str) -> Vec<&str> {
    [
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            timeout,
        ][..],
        &DURABLE_NODE,
    ]
    .concat()
}

impl RedisCluster {
    /// Starts six nodes in `dir` with `node_timeout` as their
    /// `--cluster-node-timeout`, joins them, and waits until every node
    /// says `cluster_state:ok` and every replica is in sync.
    pub async fn start(redis_server: &Path, dir: &Path, node_timeout: Duration) -> Result<Self> {
        let timeout = node_timeout.as_millis().to_string();
        let mut nodes = Vec::new();
        for i in 0..MASTERS * 2 {
            nodes.push(
                Redis::start_with(redis_server, &node_dir(dir, i), &settings(&timeout)).await?,
            );
        }
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let cli = redis_server.with_file_name("redis-cli");
        let mut create = std::process::Command::new(&cli);
        create.arg("--cluster").arg("create");
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .context(|| format!("running {} --cluster create", cli.display()))?;
        if !output.status.success() {
            return Err(Error::Process(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            )));
        }
        let cluster = Self {
            nodes: std::sync::Mutex::new(nodes.into_iter().map(Some).collect()),
            ports,
            redis_server: redis_server.to_owned(),
            dir: dir.to_owned(),
            node_timeout_ms: timeout,
        };
        cluster.wait_ok(Duration::from_secs(30)).await?;
        for node in 0..cluster.ports.len() {
            if !cluster.masters().contains(&node) {
                cluster.wait_in_sync(node, Duration::from_secs(30)).await?;
            }
        }
        Ok(cluster)
    }

    /// The seeds for `--redis-url` with `--redis-cluster`: every node.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, Vec<Option<Redis>>> {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Process ids of the live nodes, named `redis-N`.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.nodes()
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((format!("redis-{i}"), n.as_ref()?.pid())))
            .collect()
    }

    fn alive(&self, node: usize) -> bool {
        self.nodes().get(node).is_some_and(Option::is_some)
    }

    /// `INFO replication` of a live node.
    fn replication(&self, node: usize) -> Option<String> {
        if !self.alive(node) {
            return None;
        }
        command_text(self.ports[node], &["INFO", "replication"]).ok()
    }

    /// Live nodes that are masters.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.ports.len())
            .filter(|n| {
                self.replication(*n)
                    .is_some_and(|info| info.contains("role:master"))
            })
            .collect()
    }

    /// The live replica of `master`, if any.
    pub fn replica_of(&self, master: usize) -> Option<usize> {
        let line = format!("master_port:{}", self.ports[master]);
        (0..self.ports.len()).find(|n| {
            self.replication(*n)
                .is_some_and(|info| info.contains("role:slave") && info.contains(&line))
        })
    }

    /// SIGKILLs `node`.
    pub async fn kill(&self, node: usize) -> Result<()> {
        let taken = self.nodes().get_mut(node).and_then(Option::take);
        match taken {
            Some(redis) => redis.kill().await,
            None => Err(Error::Process(format!("no live Redis node {node}"))),
        }
    }

    /// Starts a killed `node` again on its port and data (a pod restarted),
    /// and waits until it has rejoined as a replica in sync, `limit` at
    /// most.
    pub async fn restart(&self, node: usize, limit: Duration) -> Result<()> {
        let redis = Redis::start_on(
            &self.redis_server,
            &node_dir(&self.dir, node),
            self.ports[node],
            &settings(&self.node_timeout_ms),
        )
        .await?;
        if let Some(slot) = self.nodes().get_mut(node) {
            *slot = Some(redis);
        }
        self.wait_in_sync(node, limit).await
    }

    /// Waits until `node` is a master, `limit` at most.
    pub async fn wait_master(&self, node: usize, limit: Duration) -> Result<()> {
        self.wait(limit, &format!("node {node} promoted"), || {
            self.replication(node)
                .is_some_and(|i| i.contains("role:master"))
        })
        .await
    }

    /// Waits until every live node says `cluster_state:ok`.
    pub async fn wait_ok(&self, limit: Duration) -> Result<()> {
        self.wait(limit, "cluster_state:ok on every node", || {
            (0..self.ports.len()).filter(|n| self.alive(*n)).all(|n| {
                command_text(self.ports[n], &["CLUSTER", "INFO"])
                    .is_ok_and(|i| i.contains("cluster_state:ok"))
            })
        })
        .await
    }

    async fn wait_in_sync(&self, node: usize, limit: Duration) -> Result<()> {
        self.wait(limit, &format!("replica {node} in sync"), || {
            self.replication(node)
                .is_some_and(|i| i.contains("master_link_status:up"))
        })
        .await
    }

    async fn wait(&self, limit: Duration, what: &str, done: impl Fn() -> bool) -> Result<()> {
        let deadline = Instant::now() + limit;
        while !done() {
            if Instant::now() >= deadline {
                return Err(Error::Process(format!(
                    "Redis Cluster: no {what} within {limit:?}"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// Stops every live node.
    pub async fn stop(self) -> Result<()> {
        let nodes = self
            .nodes
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for node in nodes.into_iter().flatten() {
            node.stop().await?;
        }
        Ok(())
    }
}
