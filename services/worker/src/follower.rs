//! Keeps one replica's local control state equal to the desired state, and
//! publishes its heartbeat.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use testbed_proto::v1::{WorkerInfo, WorkerState};
use testbed_server::CancellationToken;

use crate::consumer::Consumer;
use crate::control::local::LocalControl;
use crate::control::store::ControlStore;

/// How a replica follows the desired state.
#[derive(Debug, Clone)]
pub struct Follower {
    /// Where the desired state lives.
    pub store: ControlStore,
    /// The consumer whose figures the heartbeat reports.
    pub consumer: Consumer,
    /// The state the consumer reads.
    pub local: Arc<LocalControl>,
    /// How often the desired state is read (`--control-interval`).
    pub control_interval: Duration,
    /// How often the heartbeat is written (`--heartbeat-interval`).
    pub heartbeat_interval: Duration,
}

/// A heartbeat older than this many intervals means the worker is gone.
pub const HEARTBEAT_LIVES: u32 = 5;

fn host() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

impl Follower {
    /// Reads backlog and pending figures of every partition for the
    /// `pipeline_*` gauges (lag and oldest-pending age, for autoscalers and
    /// alerts). Skipped while the store is unreachable.
    async fn refresh_partition_gauges(&self, now: SystemTime) {
        use testbed_stream::EventLog as _;
        let log = self.consumer.log();
        let mut gauges = Vec::new();
        for partition in 0..log.partitions() {
            let (Ok(figures), Ok(pending)) =
                (log.figures(partition).await, log.pending(partition).await)
            else {
                return;
            };
            let oldest = pending.oldest_ms.map_or(0.0, |ms| {
                let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
                now.duration_since(at).unwrap_or_default().as_secs_f64()
            });
            gauges.push(crate::metrics::PartitionGauge {
                partition,
                backlog: figures.backlog(),
                pending: pending.entries,
                oldest_pending_age: oldest,
            });
        }
        if let Ok(mut slot) = self.consumer.metrics().partitions.lock() {
            *slot = gauges;
        }
    }

    /// Follows until `shutdown`, then reports DRAINING once.
    pub async fn run(self, shutdown: CancellationToken) {
        let host = host();
        let node = std::env::var("NODE_NAME").unwrap_or_default();
        let mut last_beat: Option<(Instant, u64)> = None;
        let mut failing = false;
        loop {
            let now = SystemTime::now();
            let applied = async {
                let desired = self.store.desired().await?;
                self.local.set_paused(desired.paused);
                self.local.set_concurrency(
                    desired
                        .concurrency
                        .unwrap_or(self.local.default_concurrency()),
                );
                self.local.set_faults(self.store.faults(now).await?);
                Ok::<_, testbed_stream::StoreError>(())
            }
            .await;
            match (&applied, failing) {
                (Err(err), false) => {
                    tracing::warn!(error = %err, "cannot read the desired state; keeping the last one");
                    failing = true;
                }
                (Ok(()), true) => failing = false,
                _ => {}
            }
            // Who is alive, for taking over the entries of the dead: each
            // --control-interval, so a lapse is seen soon after it happens.
            match self.store.beating(self.consumer.lapse(), now).await {
                Ok(live) => self.consumer.set_live_consumers(live),
                Err(err) => tracing::debug!(error = %err, "cannot read the heartbeats"),
            }
            let draining = shutdown.is_cancelled();
            let due = last_beat.is_none_or(|(at, _)| at.elapsed() >= self.heartbeat_interval);
            if due || draining {
                let processed = self.consumer.figures().processed.load(Ordering::Relaxed);
                let rate = last_beat.map_or(0.0, |(at, before)| {
                    (processed - before) as f64 / at.elapsed().as_secs_f64().max(1e-3)
                });
                let state = if draining {
                    WorkerState::Draining
                } else if self.local.is_paused() {
                    WorkerState::Paused
                } else {
                    WorkerState::Running
                };
                let info = WorkerInfo {
                    consumer_name: self.consumer.name().to_owned(),
                    host: host.clone(),
                    node: node.clone(),
                    arch: testbed_build_info::arch().to_owned(),
                    version: testbed_build_info::long_version(),
                    state: state as i32,
                    concurrency: self.local.concurrency(),
                    events_processed: processed,
                    events_per_second: rate,
                    last_heartbeat_time: Some(now.into()),
                };
                let ttl = self.heartbeat_interval * HEARTBEAT_LIVES;
                if let Err(err) = self.store.heartbeat(&info, ttl, now).await {
                    tracing::debug!(error = %err, "heartbeat failed");
                }
                self.refresh_partition_gauges(now).await;
                last_beat = Some((Instant::now(), processed));
            }
            if draining {
                return;
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(self.control_interval) => {}
            }
        }
    }
}
