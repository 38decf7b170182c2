//! The live progress line: an indicatif spinner on a terminal, periodic log
//! lines otherwise (CI, `kubectl logs`).

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
    let bar = terminal.then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
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
        loop {
            tokio::time::sleep(every).await;
            let (phase, target) = live
                .lock()
                .map(|p| (p.phase, p.target_rate))
                .unwrap_or_default();
            let (accepted, p99, errors) = figures
                .lock()
                .map(|f| {
                    let errors: u64 = f
                        .total
                        .status_codes
                        .iter()
                        .filter(|(c, _)| *c != "OK")
                        .map(|(_, n)| n)
                        .sum();
                    (f.total.accepted, f.total.quantile(0.99), errors)
                })
                .unwrap_or_default();
            let rate = (accepted - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
            last = (Instant::now(), accepted);
            let name = scenario.phases.get(phase).map_or("done", |p| p.name());
            let line = format!(
                "{name} | rate {rate:.0}/s (target {target:.0}) | p99 {:.2} ms | accepted {accepted} | errors {errors}",
                p99.as_secs_f64() * 1000.0
            );
            match &shown {
                Some(bar) => {
                    bar.set_message(line);
                    bar.tick();
                }
                None => tracing::info!(elapsed = ?started.elapsed(), "{line}"),
            }
        }
    });
    Reporter { task, bar }
}
