//! Taking over the entries of consumers known to be dead.
//!
//! Every worker publishes a heartbeat each `--heartbeat-interval`; the
//! follower hands the consumer the names whose heartbeat is younger than
//! [`LAPSE_INTERVALS`] intervals ([`Consumer::set_live_consumers`], each
//! `--control-interval`). A member of the group that is not among them,
//! and has not read for a whole interval nor two `--read-block`s (the
//! store's own idle time; a live worker reads every `--read-block` at
//! most, so a worker that has
//! just started and not yet beaten, or whose heartbeat write failed while
//! it reads, is left alone), is dead: its pending entries are claimed by
//! whoever notices first (every quarter interval), each claim a counted
//! delivery, and processed at once. That is about two heartbeat intervals
//! after a SIGKILL, an OOM kill or a lost node, not `--claim-idle` later;
//! `--claim-idle` stays as the fallback for a consumer whose death this
//! cannot see (the heartbeats unreadable).
//!
//! The members are listed (an `XINFO CONSUMERS` per partition) only when
//! that can find something: after the live consumers changed, while dead
//! ones still hold entries, and every `--maintenance-interval` for a
//! consumer that died before its first heartbeat.
//!
//! A dead consumer left holding nothing (and idle past `--claim-idle`) is
//! removed from the group, atomically with the check that it holds
//! nothing, so the group's member list, which this reads, stays short.
//!
//! Two workers taking over the same entries at once is harmless: the
//! apply is atomic and the second finds them acked.

#[allow(clippy::wildcard_imports)]
use super::*;

use std::collections::BTreeSet;
use std::time::Instant;

/// A heartbeat older than this many `--heartbeat-interval`s has lapsed.
pub const LAPSE_INTERVALS: u32 = 2;

/// The consumers alive when last looked at, and what the last look at
/// the group's members found.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    /// When the follower read the heartbeats.
    at: Option<Instant>,
    /// Consumer names with a heartbeat younger than the lapse.
    live: BTreeSet<String>,
    /// The live names the group was last looked at with.
    scanned: Option<BTreeSet<String>>,
    /// When every partition's members were last listed.
    scanned_at: Option<Instant>,
    /// Whether that look left dead consumers holding entries.
    dead_holding: bool,
}

impl Consumer {
    /// Records the consumers whose heartbeat has not lapsed (read by the
    /// follower from the store just now).
    pub fn set_live_consumers(&self, live: BTreeSet<String>) {
        if let Ok(mut slot) = self.liveness.lock() {
            slot.at = Some(Instant::now());
            slot.live = live;
        }
    }

    /// How old a consumer's heartbeat must be before it counts as dead
    /// (if it has not read for a heartbeat interval either).
    pub fn lapse(&self) -> Duration {
        self.config.heartbeat_interval * LAPSE_INTERVALS
    }

    /// The live consumers, if the follower's view is recent (younger than
    /// the lapse): an old view (the store unreachable) judges nobody.
    fn live_consumers(&self) -> Option<BTreeSet<String>> {
        let slot = self.liveness.lock().ok()?;
        let at = slot.at?;
        (at.elapsed() < self.lapse()).then(|| slot.live.clone())
    }

    /// Whether the group's members are worth listing now (every partition
    /// costs an `XINFO CONSUMERS`): when the live consumers changed (one
    /// whose heartbeat lapsed left them), when the last look left dead
    /// consumers holding entries, and every `--maintenance-interval` for
    /// consumers that died before their first heartbeat.
    pub(super) fn take_over_due(&self) -> bool {
        let Ok(mut slot) = self.liveness.lock() else {
            return false;
        };
        let fresh = slot.at.is_some_and(|at| at.elapsed() < self.lapse());
        if !fresh {
            return false;
        }
        let changed = slot.scanned.as_ref() != Some(&slot.live);
        let periodic = slot
            .scanned_at
            .is_none_or(|at| at.elapsed() >= self.config.maintenance_interval);
        let due = changed || periodic || slot.dead_holding;
        if due {
            slot.scanned = Some(slot.live.clone());
            slot.scanned_at = Some(Instant::now());
            slot.dead_holding = false;
        }
        due
    }

    /// Notes that a dead consumer still holds entries (look again soon).
    fn dead_still_holding(&self) {
        if let Ok(mut slot) = self.liveness.lock() {
            slot.dead_holding = true;
        }
    }

    /// Claims and processes the pending entries of `partition`'s dead
    /// consumers, and forgets the dead that hold nothing.
    pub(super) async fn take_over(&self, partition: u32) {
        if self.local.is_paused() {
            return;
        }
        let Some(live) = self.live_consumers() else {
            return;
        };
        let consumers = match self.log.consumers(partition).await {
            Ok(consumers) => consumers,
            Err(err) => {
                tracing::debug!(partition, error = %err, "cannot list the group's consumers");
                return;
            }
        };
        // A live worker reads every --read-block at most: one silent for
        // two of them (and a heartbeat interval) is not reading.
        let silent = self
            .config
            .heartbeat_interval
            .max(self.config.read_block * 2);
        // Not yet silent long enough to be judged: look again next round.
        if consumers.iter().any(|c| {
            *c.name != *self.name && !live.contains(&c.name) && c.pending > 0 && c.idle < silent
        }) {
            self.dead_still_holding();
        }
        for dead in consumers
            .into_iter()
            .filter(|c| *c.name != *self.name && !live.contains(&c.name) && c.idle >= silent)
        {
            if dead.pending == 0 {
                if dead.idle >= self.config.claim_idle {
                    match self.log.forget_consumer(partition, &dead.name).await {
                        Ok(true) => {
                            tracing::debug!(partition, consumer = %dead.name, "forgot a dead consumer")
                        }
                        Ok(false) => {}
                        Err(err) => {
                            tracing::debug!(partition, error = %err, "cannot forget a dead consumer")
                        }
                    }
                }
                continue;
            }
            if !self.take_over_from(partition, &dead.name).await {
                self.dead_still_holding();
            }
        }
    }

    /// Claims the pending entries of the dead consumer `from`, a read's
    /// worth at a time, and processes them; whether it holds none now.
    async fn take_over_from(&self, partition: u32, from: &str) -> bool {
        let count = self.config.read_count as usize;
        // Each round moves what it lists out of `from`'s hands; bounded all
        // the same, the rest is for the next look.
        for _ in 0..64 {
            let ids = match self.log.pending_of(partition, from, count).await {
                Ok(ids) if !ids.is_empty() => ids,
                Ok(_) => return true,
                Err(err) => {
                    tracing::warn!(partition, error = %err, "cannot list a dead consumer's entries");
                    return false;
                }
            };
            let listed = ids.len();
            let entries = match self.log.claim(partition, &self.name, &ids).await {
                Ok(entries) => entries,
                Err(err) => {
                    tracing::warn!(partition, error = %err, "cannot claim a dead consumer's entries");
                    // The claim may run late and make them ours unseen.
                    self.mark_lost_read(partition);
                    return false;
                }
            };
            tracing::info!(
                partition,
                consumer = %from,
                entries = entries.len(),
                "took over the entries of a dead consumer"
            );
            self.figures
                .taken_over
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            self.metrics.taken_over.add(entries.len() as u64, &[]);
            let failed = self.process(partition, entries).await;
            self.schedule_retries(partition, failed);
            if listed < count {
                return true;
            }
        }
        false
    }
}
