//! The chores beside reading: claiming stale entries and pruning idle
//! devices (`--maintenance-interval`), trimming acknowledged entries
//! (`--trim-interval`), taking over the entries of dead consumers
//! (`takeover`, four times per `--heartbeat-interval`).

#[allow(clippy::wildcard_imports)]
use super::*;

/// The periodic work of a worker besides reading.
#[derive(Debug, Clone, Copy)]
pub(super) enum Chore {
    /// Claim stale entries, prune idle devices (`--maintenance-interval`).
    ClaimAndPrune,
    /// Trim acknowledged entries (`--trim-interval`).
    Trim,
    /// Take over the entries of dead consumers (four times per
    /// `--heartbeat-interval`).
    TakeOver,
}

impl Consumer {
    /// Runs `chore` on every partition at its interval, until shutdown.
    pub(super) async fn chore_loop(self, chore: Chore, shutdown: CancellationToken) {
        let interval = match chore {
            Chore::ClaimAndPrune => self.config.maintenance_interval,
            Chore::Trim => self.config.trim_interval,
            Chore::TakeOver => self.config.heartbeat_interval / 4,
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if matches!(chore, Chore::TakeOver) && !self.take_over_due() {
                continue;
            }
            for partition in 0..self.log.partitions() {
                if shutdown.is_cancelled() {
                    return;
                }
                match chore {
                    Chore::ClaimAndPrune => self.claim_and_prune(partition).await,
                    Chore::Trim => self.trim(partition).await,
                    Chore::TakeOver => self.take_over(partition).await,
                }
            }
        }
    }

    /// Trims `partition`'s stream of what the group has acknowledged
    /// (every `--trim-interval`: a second's worth of entries at a time).
    pub(super) async fn trim(&self, partition: u32) {
        if self.local.is_paused() {
            return;
        }
        if let Err(err) = self.log.trim(partition).await {
            tracing::warn!(partition, error = %err, "trimming failed");
        }
    }

    /// Claims entries of dead consumers in `partition` and processes them,
    /// then prunes devices idle past the retention from its index.
    pub async fn claim_and_prune(&self, partition: u32) {
        if self.local.is_paused() {
            return;
        }
        match self
            .log
            .claim_stale(
                partition,
                &self.name,
                self.config.claim_idle,
                self.config.read_count as usize,
            )
            .await
        {
            Ok(entries) => {
                if !entries.is_empty() {
                    tracing::info!(partition, entries = entries.len(), "claimed stale entries");
                }
                let failed = self.process(partition, entries).await;
                self.schedule_retries(partition, failed);
            }
            Err(err) => {
                tracing::warn!(partition, error = %err, "claiming stale entries failed");
                // The claim may run late and make them ours unseen.
                self.mark_lost_read(partition);
            }
        }
        // Devices not seen within the retention leave the device index, and
        // their states with them.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let oldest = now_ms.saturating_sub(self.log.retention().as_millis()) as f64;
        let keys = self.log.keys();
        let (devices, states, ids) = (
            keys.devices(partition),
            keys.device_states(partition),
            keys.device_ids(partition),
        );
        let prune = Prune {
            index: &devices,
            below: oldest,
            records: &states,
            ids: &ids,
            labels: device_state::LABELS,
            partition,
            limit: self.config.prune_batch as usize,
        };
        if let Err(err) = self.log.prune_index(prune).await {
            tracing::warn!(partition, error = %err, "pruning the device index failed");
        }
    }
}
