//! Live figures of a served run: where its load is now (the load clock),
//! its recent accepted rate (a sliding window), and the proto
//! `RunFigures` built from the runner's counters.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use testbed_proto::v1 as pb;

use crate::load::scenario::Scenario;
use crate::load::stats::Figures;

/// The load a run follows now and since when: the target rate and phase
/// of any instant, as the runner computes them.
#[derive(Debug, Clone)]
pub struct LoadClock {
    /// The scenario in force.
    pub scenario: Scenario,
    /// When it started (StartRun, or the last UpdateRun).
    pub since: Instant,
    /// A constant-rate load (no phase shown).
    pub constant: bool,
}

impl LoadClock {
    /// The target rate at `at` and a description of the phase (empty for
    /// a constant rate); 0 and empty after the end.
    pub fn at(&self, at: Instant) -> (f64, String) {
        let Some((rate, i)) = self
            .scenario
            .rate_at(at.saturating_duration_since(self.since))
        else {
            return (0.0, String::new());
        };
        if self.constant {
            return (rate, String::new());
        }
        let name = self.scenario.phases.get(i).map_or("", |p| p.name());
        let phase = format!("{name} ({}/{})", i + 1, self.scenario.phases.len());
        match self.scenario.name.as_str() {
            "" => (rate, phase),
            scenario => (rate, format!("{scenario}: {phase}")),
        }
    }
}

/// Accepted events over the last `window`: samples of the accepted
/// counter, pruned to the one just older than the window and those after.
#[derive(Debug, Clone)]
pub struct RateWindow {
    window: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    /// A window starting at `start` with nothing accepted.
    pub fn new(window: Duration, start: Instant) -> Self {
        Self {
            window,
            samples: VecDeque::from([(start, 0)]),
        }
    }

    /// Records the accepted counter at `at`.
    pub fn record(&mut self, at: Instant, accepted: u64) {
        self.samples.push_back((at, accepted));
        if let Some(start) = at.checked_sub(self.window) {
            while self.samples.get(1).is_some_and(|(t, _)| *t <= start) {
                self.samples.pop_front();
            }
        }
    }

    /// Accepted events per second over the window ending at `at` with
    /// `accepted`.
    pub fn rate(&self, at: Instant, accepted: u64) -> f64 {
        let Some((t0, n0)) = self.samples.front() else {
            return 0.0;
        };
        let secs = at.saturating_duration_since(*t0).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        accepted.saturating_sub(*n0) as f64 / secs
    }
}

fn proto_duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

/// The proto figures of a run from the runner's totals.
pub fn figures(
    total: &Figures,
    target_rate: f64,
    achieved_rate: f64,
    phase: String,
) -> pb::RunFigures {
    let latency = pb::SimLatency {
        p50: proto_duration(total.quantile(0.5)),
        p90: proto_duration(total.quantile(0.9)),
        p99: proto_duration(total.quantile(0.99)),
        p999: proto_duration(total.quantile(0.999)),
        max: proto_duration(Duration::from_micros(total.latency.max())),
    };
    pb::RunFigures {
        events_sent: total.sent,
        events_accepted: total.accepted,
        events_rejected: total.rejected,
        // The runner counts re-sent batches, not events (see stats::Figures).
        events_retried: total.retried_events,
        target_rate,
        achieved_rate,
        current_phase: phase,
        ack_latency: Some(latency),
        status_codes: total
            .status_codes
            .iter()
            .map(|(code, n)| (code.clone(), *n))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::scenario::Phase;

    /// The rate covers the window and follows a change within it.
    #[test]
    fn rate_window_follows_changes() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut w = RateWindow::new(Duration::from_secs(2), t0);
        // 100/s for 4 s, sampled every 250 ms.
        for i in 1..=16 {
            w.record(s(i * 250), i * 25);
        }
        assert_eq!(w.rate(s(4000), 400), 100.0);
        // Then 300/s for 2 s: the window holds only the new rate.
        for i in 1..=8 {
            w.record(s(4000 + i * 250), 400 + i * 75);
        }
        assert_eq!(w.rate(s(6000), 1000), 300.0);
        // Between samples, the reading itself ends the window.
        assert_eq!(w.rate(s(6100), 1030), 300.0);
        // Nothing yet: zero, not NaN.
        assert_eq!(RateWindow::new(Duration::from_secs(2), t0).rate(t0, 0), 0.0);
    }

    /// The clock names the phase as `name: kind (i/n)` and gives 0 after the end.
    #[test]
    fn load_clock_names_phases() {
        let t0 = Instant::now();
        let clock = LoadClock {
            scenario: Scenario {
                name: "hpa".into(),
                phases: vec![
                    Phase::Hold {
                        rate: 10.0,
                        duration: Duration::from_secs(1),
                    },
                    Phase::Spike {
                        rate: 50.0,
                        duration: Duration::from_secs(1),
                    },
                ],
            },
            since: t0,
            constant: false,
        };
        assert_eq!(
            clock.at(t0 + Duration::from_millis(1500)),
            (50.0, "hpa: spike (2/2)".to_owned())
        );
        assert_eq!(clock.at(t0 + Duration::from_secs(3)), (0.0, String::new()));
        let steady = LoadClock {
            scenario: Scenario::steady(7.0, Duration::from_secs(9)),
            since: t0,
            constant: true,
        };
        assert_eq!(steady.at(t0), (7.0, String::new()));
    }

    /// Empty figures have zero latencies, not missing ones.
    #[test]
    fn empty_figures_are_zero() {
        let f = figures(&Figures::default(), 5.0, 0.0, String::new());
        let latency = f.ack_latency.unwrap();
        assert_eq!(latency.p99, Some(prost_types::Duration::default()));
        assert_eq!(latency.max, Some(prost_types::Duration::default()));
        assert_eq!((f.events_sent, f.target_rate), (0, 5.0));
    }
}
