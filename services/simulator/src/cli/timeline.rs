//! The run over time: one [`Sample`] per `--sample-interval` (offered and
//! achieved rate, the interval's own ack-latency percentiles, its refusals
//! and re-sent batches), for the HTML report's charts and the JSON record.
//!
//! The interval's latencies are the cumulative histogram less the one of
//! the previous sample (HDR histograms subtract exactly), so the sampler
//! adds nothing to the send path: it clones the histogram once per
//! interval under the figures' lock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use testbed_server::CancellationToken;

use crate::load::runner::Progress;
use crate::load::stats::RunFigures;

/// The run's figures over one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sample {
    /// End of the interval, seconds since the run started.
    pub t_s: f64,
    /// The schedule's rate at the end of the interval, events/s (offered).
    pub target_rate: f64,
    /// Events acknowledged as accepted in the interval, per second.
    pub achieved_rate: f64,
    /// Ack latency of the batches answered in the interval, median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Attempts answered with a status other than OK in the interval.
    pub errors: u64,
    /// Batches re-sent in the interval.
    pub retried: u64,
}

/// What one sample needs of the previous one.
struct Mark {
    at: Instant,
    target_rate: f64,
    accepted: u64,
    errors: u64,
    retried: u64,
    latency: Histogram<u64>,
}

fn errors(f: &RunFigures) -> u64 {
    f.total
        .status_codes
        .iter()
        .filter(|(c, _)| *c != "OK")
        .map(|(_, n)| n)
        .sum()
}

impl Mark {
    fn take(figures: &Mutex<RunFigures>, target_rate: f64) -> Option<Self> {
        let f = figures.lock().ok()?;
        Some(Self {
            at: Instant::now(),
            target_rate,
            accepted: f.total.accepted,
            errors: errors(&f),
            retried: f.total.retried,
            latency: f.total.latency.clone(),
        })
    }

    /// The interval from `before` to this mark; its offered rate is the
    /// mean of the schedule's rate at both ends (exact for a ramp).
    fn sample_since(&self, before: &Mark, started: Instant) -> Sample {
        let secs = self.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let mut interval = self.latency.clone();
        // The cumulative histogram only grows, so this cannot fail; if it
        // ever did, the interval shows no latency rather than a wrong one.
        let ok = interval.subtract(&before.latency).is_ok();
        let quantile = |q: f64| {
            if ok && !interval.is_empty() {
                interval.value_at_quantile(q) as f64 / 1000.0
            } else {
                0.0
            }
        };
        let (p50_ms, p99_ms, p999_ms) = (quantile(0.5), quantile(0.99), quantile(0.999));
        Sample {
            t_s: self.at.duration_since(started).as_secs_f64(),
            target_rate: (before.target_rate + self.target_rate) / 2.0,
            achieved_rate: self.accepted.saturating_sub(before.accepted) as f64 / secs,
            p50_ms,
            p99_ms,
            p999_ms,
            errors: self.errors.saturating_sub(before.errors),
            retried: self.retried.saturating_sub(before.retried),
        }
    }
}

/// A running sampler; [`Recorder::finish`] stops it and returns the samples.
pub struct Recorder {
    task: tokio::task::JoinHandle<Vec<Sample>>,
    stop: CancellationToken,
}

impl Recorder {
    /// Takes a last sample (the drain after the schedule) and returns them all.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// Starts sampling `figures` every `every`.
pub fn spawn(
    every: Duration,
    figures: Arc<Mutex<RunFigures>>,
    live: Arc<Mutex<Progress>>,
) -> Recorder {
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let mut samples = Vec::new();
        let target = || live.lock().map(|p| p.target_rate).unwrap_or_default();
        let Some(mut last) = Mark::take(&figures, target()) else {
            return samples;
        };
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let done = tokio::select! {
                _ = ticks.tick() => false,
                () = stopped.cancelled() => true,
            };
            // After the schedule (the drain), nothing more is offered.
            let Some(now) = Mark::take(&figures, if done { 0.0 } else { target() }) else {
                break;
            };
            // A final interval (the drain) shorter than half of one adds
            // only noise: its few answers make a rate spike or dip.
            if !done || now.at.duration_since(last.at) >= every / 2 {
                samples.push(now.sample_since(&last, started));
                last = now;
            }
            if done {
                break;
            }
        }
        samples
    });
    Recorder { task, stop }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample's rates and percentiles are those of its interval alone,
    /// not of the run so far.
    #[test]
    fn a_sample_covers_its_interval_only() {
        let figures = Mutex::new(RunFigures::new(1));
        let before = Mark::take(&figures, 0.0).unwrap();
        {
            let mut f = figures.lock().unwrap();
            for _ in 0..1000 {
                f.total.record_latency(Duration::from_millis(100));
            }
            f.total.accepted = 1000;
        }
        let middle = Mark::take(&figures, 1000.0).unwrap();
        {
            let mut f = figures.lock().unwrap();
            for _ in 0..500 {
                f.total.record_latency(Duration::from_millis(2));
            }
            f.total.accepted = 1500;
            f.total.status_codes.insert("UNAVAILABLE".into(), 3);
            f.total.retried = 3;
        }
        let mut after = Mark::take(&figures, 1400.0).unwrap();
        after.at = middle.at + Duration::from_millis(500);
        let started = before.at;
        let s = after.sample_since(&middle, started);
        assert_eq!((s.achieved_rate, s.target_rate), (1000.0, 1200.0));
        assert_eq!((s.errors, s.retried), (3, 3));
        // 2 ms recorded in microseconds, within HDR's 3 significant figures.
        assert!((s.p99_ms - 2.0).abs() < 0.01, "{}", s.p99_ms);
        assert!((s.p50_ms - 2.0).abs() < 0.01, "{}", s.p50_ms);
    }
}
