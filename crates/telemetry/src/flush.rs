//! The last step of a shutdown: flushing the providers within a budget.
//!
//! # Why a budget of our own
//! The SDK's shutdown calls block, each bounded by a timeout of its own,
//! and the guard used to run them one after another: the tracer provider
//! (its batch span processor waits as long as it is told, 5 s by default),
//! then the meter provider (its `PeriodicReader` waits a hard-coded 5 s
//! whatever it is told: opentelemetry_sdk 0.33, `periodic_reader.rs`), then
//! the logger provider (5 s). Each one exports what it holds first, so
//! against a collector that does not answer each waits out its 5 s.
//! Measured on `testbed ingest|worker|query` before this module, SIGTERM to
//! exit: 15.0 s when the collector's port drops SYNs (3 × 5 s), 10.0 s when
//! the collector accepts connections and never answers, 0.0-0.3 s without
//! an endpoint or with a healthy receiver. The 4.7 s reported with a
//! healthy receiver did not reproduce with an OTLP receiver on loopback:
//! the final exports took 10-100 ms, and nothing waits for an export
//! interval or a batch delay, since a shutdown message wakes the SDK's
//! worker threads at once (they block in `recv_timeout` on their control
//! channel).
//!
//! So [`flush_within`] runs every provider's shutdown at the same time, each
//! on a thread of its own, and waits for them until one deadline. A provider
//! still flushing at the deadline is abandoned: its thread is left behind,
//! blocked in the SDK, and ends with the process; the telemetry it held is
//! lost, and the [`FlushReport`] names it so that the last log line can say
//! what was dropped. Threads rather than Tokio tasks because the SDK's calls
//! block, and a `spawn_blocking` task still running would hold up the
//! runtime's own shutdown.

use std::fmt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};

/// One provider to shut down: its signal's name and the blocking call that
/// flushes and stops it, given the time it may take.
pub(crate) struct Provider {
    signal: &'static str,
    shutdown: Box<dyn FnOnce(Duration) -> OTelSdkResult + Send>,
}

impl Provider {
    /// `shutdown` flushes and stops the provider of `signal`.
    pub(crate) fn new(
        signal: &'static str,
        shutdown: impl FnOnce(Duration) -> OTelSdkResult + Send + 'static,
    ) -> Self {
        Self {
            signal,
            shutdown: Box::new(shutdown),
        }
    }
}

/// How one provider's shutdown ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything it held was exported (or there was nothing to export).
    Flushed,
    /// The SDK reported an error; what it held may be lost.
    Failed(String),
    /// Still flushing at the deadline: abandoned, what it held is dropped.
    TimedOut,
}

/// What the final flush did, per signal: the content of the last log line.
#[derive(Debug, Clone)]
pub struct FlushReport {
    budget: Duration,
    elapsed: Duration,
    outcomes: Vec<(&'static str, Outcome, Duration)>,
}

impl FlushReport {
    /// The budget the flush was given (`--telemetry-flush-timeout`).
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// How long the flush took, abandoned providers included.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Each signal's outcome, in the order the providers were given.
    pub fn outcomes(&self) -> impl Iterator<Item = (&'static str, &Outcome)> {
        self.outcomes
            .iter()
            .map(|(signal, outcome, _)| (*signal, outcome))
    }

    /// The signals whose providers were abandoned at the deadline.
    pub fn timed_out(&self) -> Vec<&'static str> {
        self.outcomes()
            .filter(|(_, outcome)| **outcome == Outcome::TimedOut)
            .map(|(signal, _)| signal)
            .collect()
    }

    /// Whether every provider flushed.
    pub fn complete(&self) -> bool {
        self.outcomes()
            .all(|(_, outcome)| *outcome == Outcome::Flushed)
    }

    /// Logs the report as one line: INFO when everything was flushed, WARN
    /// naming what was dropped otherwise. Meant to be the process's last.
    pub fn log(&self) {
        if self.complete() {
            tracing::info!(
                budget = ?self.budget,
                elapsed = ?self.elapsed,
                "{self}"
            );
        } else {
            tracing::warn!(
                budget = ?self.budget,
                elapsed = ?self.elapsed,
                timed_out = %self.timed_out().join(","),
                "{self}"
            );
        }
    }
}

/// `telemetry flushed (traces 3ms, metrics 12ms)` or `telemetry not fully
/// flushed within 500ms, unexported telemetry dropped: traces, metrics timed
/// out; logs failed: ...`.
impl fmt::Display for FlushReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let took = |d: &Duration| format!("{}ms", d.as_millis());
        if self.outcomes.is_empty() {
            return write!(f, "telemetry: nothing to flush; exiting");
        }
        if self.complete() {
            let each: Vec<String> = self
                .outcomes
                .iter()
                .map(|(signal, _, d)| format!("{signal} {}", took(d)))
                .collect();
            return write!(f, "telemetry flushed ({}); exiting", each.join(", "));
        }
        write!(
            f,
            "telemetry not fully flushed within {}, unexported telemetry dropped:",
            humantime::format_duration(self.budget)
        )?;
        let timed_out = self.timed_out();
        if !timed_out.is_empty() {
            write!(f, " {} timed out", timed_out.join(", "))?;
        }
        let mut first = timed_out.is_empty();
        for (signal, outcome, _) in &self.outcomes {
            if let Outcome::Failed(err) = outcome {
                let sep = if first { " " } else { "; " };
                first = false;
                write!(f, "{sep}{signal} failed: {err}")?;
            }
        }
        let flushed: Vec<&str> = self
            .outcomes()
            .filter(|(_, outcome)| **outcome == Outcome::Flushed)
            .map(|(signal, _)| signal)
            .collect();
        if !flushed.is_empty() {
            write!(f, " ({} flushed)", flushed.join(", "))?;
        }
        write!(f, "; exiting")
    }
}

/// How much longer than the budget the SDK's own shutdown timeouts are. The
/// deadline in [`flush_within`] decides what timed out, not a race with the
/// SDK's timers: the providers report their processors' timeouts only as
/// text (`Shutdown errors: [Timeout(1s)]`), which would read as a failure.
const SDK_TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// Shuts every provider down at once and waits for them until `budget` has
/// passed, then returns whatever has finished by then; the rest are
/// abandoned (see the module docs). Blocks the calling thread for at most
/// `budget` (plus the time to start the threads).
pub(crate) fn flush_within(providers: Vec<Provider>, budget: Duration) -> FlushReport {
    let sdk_timeout = budget.saturating_add(SDK_TIMEOUT_SLACK);
    let started = Instant::now();
    let deadline = started + budget;
    let (done_tx, done_rx) = mpsc::channel();
    let mut outcomes: Vec<(&'static str, Outcome, Duration)> = Vec::new();
    let mut pending: Vec<&'static str> = Vec::new();
    let order: Vec<&'static str> = providers.iter().map(|p| p.signal).collect();
    for Provider { signal, shutdown } in providers {
        let done = done_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("telemetry-flush-{signal}"))
            .spawn(move || {
                let result = shutdown(sdk_timeout);
                // The receiver is gone when the deadline passed: nobody waits.
                let _ = done.send((signal, result, started.elapsed()));
            });
        match spawned {
            Ok(_detached) => pending.push(signal),
            Err(err) => outcomes.push((
                signal,
                Outcome::Failed(format!("cannot start a thread to flush: {err}")),
                started.elapsed(),
            )),
        }
    }
    drop(done_tx);
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((signal, result, took)) = done_rx.recv_timeout(left) else {
            break;
        };
        pending.retain(|s| *s != signal);
        let outcome = match result {
            Ok(()) => Outcome::Flushed,
            // A timeout of the SDK's own, reported as such.
            Err(OTelSdkError::Timeout(_)) => Outcome::TimedOut,
            Err(err) => Outcome::Failed(err.to_string()),
        };
        outcomes.push((signal, outcome, took));
    }
    outcomes.extend(
        pending
            .into_iter()
            .map(|signal| (signal, Outcome::TimedOut, budget)),
    );
    outcomes.sort_by_key(|(signal, _, _)| order.iter().position(|s| s == signal));
    FlushReport {
        budget,
        elapsed: started.elapsed(),
        outcomes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeping(signal: &'static str, sleep: Duration) -> Provider {
        Provider::new(signal, move |_| {
            std::thread::sleep(sleep);
            Ok(())
        })
    }

    /// Providers that finish in time are flushed, and the flush takes about
    /// as long as the slowest of them, not their sum.
    #[test]
    fn providers_flush_in_parallel() {
        let report = flush_within(
            vec![
                sleeping("traces", Duration::from_millis(200)),
                sleeping("metrics", Duration::from_millis(200)),
                sleeping("logs", Duration::from_millis(200)),
            ],
            Duration::from_secs(2),
        );
        assert!(report.complete(), "{report}");
        assert!(
            report.elapsed() < Duration::from_millis(500),
            "{:?}",
            report.elapsed()
        );
        assert!(report.to_string().starts_with("telemetry flushed (traces "));
    }

    /// A provider still flushing at the deadline is abandoned: the call
    /// returns at the budget, names it as timed out, and keeps the others'
    /// outcomes.
    #[test]
    fn a_stuck_provider_is_abandoned_at_the_deadline() {
        let budget = Duration::from_millis(300);
        let report = flush_within(
            vec![
                sleeping("traces", Duration::from_secs(5)),
                sleeping("metrics", Duration::ZERO),
                Provider::new("logs", |_| {
                    Err(OTelSdkError::InternalFailure("collector said no".into()))
                }),
            ],
            budget,
        );
        assert!(report.elapsed() >= budget, "{:?}", report.elapsed());
        assert!(
            report.elapsed() < budget + Duration::from_millis(200),
            "{:?}",
            report.elapsed()
        );
        assert_eq!(report.timed_out(), vec!["traces"]);
        assert!(!report.complete());
        assert_eq!(
            report.to_string(),
            "telemetry not fully flushed within 300ms, unexported telemetry dropped: \
             traces timed out; logs failed: Operation failed: collector said no \
             (metrics flushed); exiting"
        );
    }

    /// Each provider's own timeout is longer than the budget, so that the
    /// deadline decides what timed out.
    #[test]
    fn providers_get_more_than_the_budget() {
        let (tx, rx) = mpsc::channel();
        let report = flush_within(
            vec![Provider::new("traces", move |timeout| {
                let _ = tx.send(timeout);
                Ok(())
            })],
            Duration::from_millis(750),
        );
        assert!(report.complete());
        assert_eq!(rx.recv().unwrap(), Duration::from_millis(1750));
    }

    /// No providers: nothing to wait for.
    #[test]
    fn nothing_to_flush() {
        let report = flush_within(Vec::new(), Duration::from_secs(1));
        assert!(report.complete());
        assert!(report.elapsed() < Duration::from_millis(100));
        assert_eq!(report.to_string(), "telemetry: nothing to flush; exiting");
    }
}
