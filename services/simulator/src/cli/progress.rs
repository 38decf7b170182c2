//! The live progress line: an indicatif bar on a terminal (the schedule's
//! elapsed share, then rate, p99, accepted and errors), periodic log lines
//! otherwise (CI, `kubectl logs`).
//!
//! Errors are summarised, not flooded: the first answer of each non-OK
//! status code gets one line (its count is in every progress line and the
//! report), later ones none.

use std::collections::BTreeSet;
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::load::runner::Progress;
use crate::load::scenario::Scenario;
use crate::load::stats::RunFigures;

/// A running progress reporter; [`Reporter::finish`] stops it.
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Reporter {
    /// Stops the reporter and clears the line.
    pub fn finish(self) {
        self.task.abort();
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Starts reporting `figures` every half second (terminal) or five seconds (logs).
pub fn spawn(
    scenario: Scenario,
    figures: Arc<Mutex<RunFigures>>,
    live: Arc<Mutex<Progress>>,
) -> Reporter {
    let terminal = std::io::stderr().is_terminal();
    let total = scenario.duration().as_secs().max(1);
    let bar = terminal.then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:24}] {pos:>3}/{len}s {msg}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let shown = bar.clone();
    let started = Instant::now();
    let task = tokio::spawn(async move {
        let every = if terminal {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        };
        let mut last = (Instant::now(), 0u64);
        let mut seen = BTreeSet::new();
        loop {
            tokio::time::sleep(every).await;
            let (phase, target) = live
                .lock()
                .map(|p| (p.phase, p.target_rate))
                .unwrap_or_default();
            let (accepted, p99, codes) = figures
                .lock()
                .map(|f| {
                    let codes: Vec<(String, u64)> = f
                        .total
                        .status_codes
                        .iter()
                        .filter(|(c, _)| *c != "OK")
                        .map(|(c, n)| (c.clone(), *n))
                        .collect();
                    (f.total.accepted, f.total.quantile(0.99), codes)
                })
                .unwrap_or_default();
            let errors: u64 = codes.iter().map(|(_, n)| n).sum();
            for (code, _) in &codes {
                if seen.insert(code.clone()) {
                    let line = format!(
                        "first {code} answer at {:.1}s; batches refused so are re-sent, and counted (not logged) from here",
                        started.elapsed().as_secs_f64()
                    );
                    match &shown {
                        Some(bar) => bar.println(line),
                        None => tracing::warn!("{line}"),
                    }
                }
            }
            let rate = (accepted - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
            last = (Instant::now(), accepted);
            let name = scenario.phases.get(phase).map_or("done", |p| p.name());
            let line = format!(
                "{name} | rate {rate:.0}/s (target {target:.0}) | p99 {:.2} ms | accepted {accepted} | errors {errors}",
                p99.as_secs_f64() * 1000.0
            );
            match &shown {
                Some(bar) => {
                    bar.set_position(started.elapsed().as_secs().min(total));
                    bar.set_message(line);
                }
                None => tracing::info!(elapsed = ?started.elapsed(), "{line}"),
            }
        }
    });
    Reporter { task, bar }
}
