//! `:abort` thresholds checked while the run goes: over a sliding window
//! of the run's figures, after a warm-up, stopping the run the first time
//! one is crossed.
//!
//! The window is the difference of two snapshots of the cumulative
//! figures (HDR histograms subtract exactly), as the report's timeline
//! does, so the check adds nothing to the send path: one clone of the
//! figures per tick, under their lock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testbed_server::CancellationToken;

use crate::load::stats::{Figures, RunFigures};
use crate::thresholds::eval::{Observed, Outcome};
use crate::thresholds::expr::Threshold;

/// How live thresholds are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSettings {
    /// Nothing is checked before this much of the run has passed.
    pub warmup: Duration,
    /// The sliding window checked.
    pub window: Duration,
}

/// One snapshot of the cumulative figures.
struct Mark {
    at: Instant,
    figures: Figures,
    /// Events the schedule offered so far (its rate integrated).
    offered: f64,
}

/// The live check of a run's `:abort` thresholds.
pub struct LiveCheck {
    thresholds: Vec<Threshold>,
    settings: LiveSettings,
    started: Instant,
    marks: VecDeque<Mark>,
    last_rate: f64,
}

impl LiveCheck {
    /// The check of the `:abort` thresholds among `thresholds`; `None`
    /// when there are none.
    pub fn new(thresholds: &[Threshold], settings: LiveSettings, started: Instant) -> Option<Self> {
        let live: Vec<Threshold> = thresholds.iter().filter(|t| t.abort).cloned().collect();
        (!live.is_empty()).then(|| Self {
            thresholds: live,
            settings,
            started,
            marks: VecDeque::new(),
            last_rate: 0.0,
        })
    }

    /// Records the figures at `at`, with the schedule's rate now; returns
    /// the first threshold crossed over the window, if any.
    pub fn observe(&mut self, at: Instant, total: &Figures, target_rate: f64) -> Option<Outcome> {
        let offered = self.marks.back().map_or(0.0, |last| {
            let secs = at.saturating_duration_since(last.at).as_secs_f64();
            last.offered + (self.last_rate + target_rate) / 2.0 * secs
        });
        self.last_rate = target_rate;
        let mark = Mark {
            at,
            figures: total.clone(),
            offered,
        };
        if at.saturating_duration_since(self.started) < self.settings.warmup {
            // During the warm-up the window's start moves along with it.
            self.marks.clear();
            self.marks.push_back(mark);
            return None;
        }
        self.marks.push_back(mark);
        if let Some(start) = at.checked_sub(self.settings.window) {
            while self.marks.get(1).is_some_and(|m| m.at <= start) {
                self.marks.pop_front();
            }
        }
        let (first, last) = (self.marks.front()?, self.marks.back()?);
        let secs = last.at.saturating_duration_since(first.at).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let observed = window(first, last, secs);
        self.thresholds.iter().find_map(|t| {
            let mut outcome = Outcome::check(t, &observed);
            (!outcome.passed).then(|| {
                outcome.aborted = true;
                outcome
            })
        })
    }
}

/// The figures between two marks.
fn window(first: &Mark, last: &Mark, secs: f64) -> Observed {
    let (a, b) = (&first.figures, &last.figures);
    let mut interval = b.clone();
    // The cumulative histogram only grows; were that ever not so, the
    // window would be checked against the whole run so far instead.
    let _ = interval.latency.subtract(&a.latency);
    for (code, n) in &mut interval.status_codes {
        *n = n.saturating_sub(a.status_codes.get(code).copied().unwrap_or(0));
    }
    interval.sent = b.sent.saturating_sub(a.sent);
    interval.rejected = b.rejected.saturating_sub(a.rejected);
    interval.failed = b.failed.saturating_sub(a.failed);
    // Retried batches count over the whole run: a budget, not a rate.
    let accepted = b.accepted.saturating_sub(a.accepted);
    let mut observed = Observed::of(
        &interval,
        (last.offered - first.offered) / secs,
        accepted as f64 / secs,
    );
    // The longest gap so far, counting the one still open: a stall ends
    // the run while it lasts, not after publishing resumes.
    observed.gap_ms = b.longest_gap_until(last.at).as_secs_f64() * 1000.0;
    observed
}

/// A running live check; [`Watcher::finish`] stops it.
pub struct Watcher {
    task: tokio::task::JoinHandle<Option<Outcome>>,
    done: CancellationToken,
}

impl Watcher {
    /// Stops watching; returns the threshold that stopped the run, if one did.
    pub async fn finish(self) -> Option<Outcome> {
        self.done.cancel();
        self.task.await.ok().flatten()
    }
}

/// Checks `check` every tick (a fifth of the window, 100 ms..1 s) against
/// `figures`, with `target_rate()` the schedule's rate now; cancels
/// `stop` when a threshold is crossed.
pub fn spawn(
    mut check: LiveCheck,
    figures: Arc<Mutex<RunFigures>>,
    target_rate: impl Fn() -> f64 + Send + 'static,
    stop: CancellationToken,
) -> Watcher {
    let done = CancellationToken::new();
    let finished = done.clone();
    let every =
        (check.settings.window / 5).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = finished.cancelled() => return None,
                () = stop.cancelled() => return None,
            }
            let total = match figures.lock() {
                Ok(f) => f.total.clone(),
                Err(poisoned) => poisoned.into_inner().total.clone(),
            };
            if let Some(crossed) = check.observe(Instant::now(), &total, target_rate()) {
                tracing::warn!(
                    threshold = crossed.expression,
                    observed = crossed.observed_text,
                    "threshold crossed: stopping the run"
                );
                stop.cancel();
                return Some(crossed);
            }
        }
    });
    Watcher { task, done }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LiveSettings {
        LiveSettings {
            warmup: Duration::from_secs(2),
            window: Duration::from_secs(3),
        }
    }

    fn latencies(f: &mut Figures, ms: u64, n: usize) {
        for _ in 0..n {
            f.record_latency(Duration::from_millis(ms));
        }
        f.status_codes
            .entry("OK".into())
            .and_modify(|c| *c += n as u64)
            .or_insert(n as u64);
    }

    /// Nothing is checked in the warm-up; after it, only the window counts:
    /// a slow start does not cross, slow batches in the window do.
    #[test]
    fn warmup_then_window() {
        let t = [
            "ack_p99<10ms:abort".parse().unwrap(),
            "ack_p99<1ms".parse().unwrap(),
        ];
        let start = Instant::now();
        let mut check = LiveCheck::new(&t, settings(), start).unwrap();
        let mut f = Figures::default();
        let s = Duration::from_secs;
        // A slow warm-up.
        latencies(&mut f, 500, 100);
        assert_eq!(check.observe(start + s(1), &f, 100.0), None);
        assert_eq!(check.observe(start + s(2), &f, 100.0), None);
        // Fast after it: the end-only `ack_p99<1ms` is not checked live.
        for i in 3..=6 {
            latencies(&mut f, 2, 100);
            assert_eq!(check.observe(start + s(i), &f, 100.0), None, "{i}");
        }
        // Slow again: crossed.
        latencies(&mut f, 50, 300);
        let crossed = check.observe(start + s(7), &f, 100.0).unwrap();
        assert_eq!(crossed.expression, "ack_p99<10ms:abort");
        assert!(crossed.aborted && !crossed.passed);
        assert!((crossed.observed - 50.0).abs() < 0.5, "{crossed:?}");
    }

    /// The achieved share is the window's accepted events over what the
    /// schedule offered in it.
    #[test]
    fn achieved_over_the_window() {
        let t = ["achieved>=90%:abort".parse().unwrap()];
        let start = Instant::now();
        let mut check = LiveCheck::new(&t, settings(), start).unwrap();
        let mut f = Figures::default();
        let s = Duration::from_secs;
        assert_eq!(check.observe(start + s(2), &f, 100.0), None);
        f.accepted = 100;
        assert_eq!(check.observe(start + s(3), &f, 100.0), None);
        f.accepted = 150;
        let crossed = check.observe(start + s(4), &f, 100.0).unwrap();
        assert!((crossed.observed - 0.75).abs() < 1e-9, "{crossed:?}");
    }

    /// A stall crosses `gap` while it lasts, before publishing resumes.
    #[test]
    fn an_open_gap_crosses_live() {
        let t = ["gap<2s:abort".parse().unwrap()];
        let start = Instant::now();
        let mut check = LiveCheck::new(&t, settings(), start).unwrap();
        let mut f = Figures::default();
        let s = Duration::from_secs;
        for i in 0..=3 {
            f.note_accepted(start + s(i));
            assert_eq!(check.observe(start + s(i), &f, 100.0), None, "{i}");
        }
        let later = start + Duration::from_millis(4_500);
        assert_eq!(check.observe(later, &f, 100.0), None);
        let crossed = check.observe(start + s(6), &f, 100.0).unwrap();
        assert!(crossed.aborted, "{crossed:?}");
        assert!((crossed.observed - 3_000.0).abs() < 1e-6, "{crossed:?}");
    }

    /// No `:abort` threshold, no live check.
    #[test]
    fn none_without_abort() {
        let t = ["ack_p99<10ms".parse().unwrap()];
        assert!(LiveCheck::new(&t, settings(), Instant::now()).is_none());
    }
}
