//! The control state one replica applies, read by its consumer.

use std::sync::{Arc, Mutex, RwLock};

use testbed_proto::v1::Fault;
use tokio::sync::{Semaphore, watch};

/// Pause flag, live concurrency and active faults of this replica.
#[derive(Debug)]
pub struct LocalControl {
    paused: watch::Sender<bool>,
    permits: Arc<Semaphore>,
    /// Total permits the semaphore is meant to hold now.
    concurrency: Mutex<u32>,
    /// The configured concurrency, used when no desired value is set.
    default_concurrency: u32,
    faults: RwLock<Arc<Vec<Fault>>>,
}

impl LocalControl {
    /// Running, with `concurrency` permits and no faults.
    pub fn new(concurrency: u32) -> Self {
        Self {
            paused: watch::Sender::new(false),
            permits: Arc::new(Semaphore::new(concurrency as usize)),
            concurrency: Mutex::new(concurrency),
            default_concurrency: concurrency,
            faults: RwLock::new(Arc::new(Vec::new())),
        }
    }

    /// The permits that bound how many entries are applied at once.
    pub fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// Whether consumption is paused now.
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// A receiver that sees pause changes.
    pub fn watch_paused(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }

    /// Pauses or resumes consumption.
    pub fn set_paused(&self, paused: bool) {
        self.paused
            .send_if_modified(|p| std::mem::replace(p, paused) != paused);
    }

    /// The concurrency this replica runs at (permits in the semaphore).
    pub fn concurrency(&self) -> u32 {
        *self.concurrency.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configured concurrency (`--concurrency`).
    pub fn default_concurrency(&self) -> u32 {
        self.default_concurrency
    }

    /// Moves the permit count toward `target`. Raising is immediate;
    /// lowering takes back only idle permits, so an entry being applied is
    /// never interrupted: call again until [`LocalControl::concurrency`]
    /// reaches the target (the follower does, every tick).
    pub fn set_concurrency(&self, target: u32) {
        let mut current = self.concurrency.lock().unwrap_or_else(|p| p.into_inner());
        if target > *current {
            self.permits.add_permits((target - *current) as usize);
            *current = target;
        } else if target < *current {
            let taken = self.permits.forget_permits((*current - target) as usize);
            *current -= taken as u32;
        }
    }

    /// The active faults.
    pub fn faults(&self) -> Arc<Vec<Fault>> {
        self.faults
            .read()
            .map(|f| Arc::clone(&f))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Replaces the active faults.
    pub fn set_faults(&self, faults: Vec<Fault>) {
        let mut slot = self.faults.write().unwrap_or_else(|p| p.into_inner());
        *slot = Arc::new(faults);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concurrency rises at once and falls as permits come back.
    #[tokio::test]
    async fn concurrency_follows_target() {
        let local = LocalControl::new(2);
        local.set_concurrency(5);
        assert_eq!(
            (local.concurrency(), local.permits().available_permits()),
            (5, 5)
        );
        let held = local.permits().clone().acquire_many_owned(4).await.unwrap();
        local.set_concurrency(1);
        // Only one idle permit could be taken back.
        assert_eq!(local.concurrency(), 4);
        drop(held);
        local.set_concurrency(1);
        assert_eq!(
            (local.concurrency(), local.permits().available_permits()),
            (1, 1)
        );
    }

    /// Pause changes reach watchers.
    #[tokio::test]
    async fn pause_is_observable() {
        let local = LocalControl::new(1);
        let mut rx = local.watch_paused();
        local.set_paused(true);
        rx.changed().await.unwrap();
        assert!(*rx.borrow() && local.is_paused());
    }
}
