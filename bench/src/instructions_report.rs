//! The instructions step's figures and how they are shown: per process,
//! the instructions of the workload net of what the process spends idle
//! (its timers and polls, counted over the same length of time), divided
//! by the events; across repetitions their median and spread; the
//! Markdown section with the row for `bench/README.md`'s log. Pure: the
//! step itself (processes under callgrind, the workload) is
//! [`crate::instructions`].

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One process's instruction counts (`Ir`, every thread) in one
/// measurement, split by the dumps taken between its parts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessCounts {
    /// `ingest` or `worker`.
    pub name: String,
    /// From exec to the end of the settle time after it was ready.
    pub startup_ir: u64,
    /// The idle window: ready, no load.
    pub idle_ir: u64,
    /// Its length, s.
    pub idle_s: f64,
    /// This process's own phase (ingest's: the ingest phase; the
    /// worker's: the worker phase), the figure's count.
    pub workload_ir: u64,
    /// Its length, s.
    pub workload_s: f64,
    /// Both phases: the ingest phase (workers paused, the simulator's
    /// events appended) and the worker phase (resumed until verified);
    /// the other process's phase should cost about the idle rate.
    #[serde(default)]
    pub phase_ir: [u64; 2],
    /// Their lengths, s.
    #[serde(default)]
    pub phase_s: [f64; 2],
    /// From then to exit (SIGTERM and graceful shutdown); none if the
    /// final dump could not be read.
    pub shutdown_ir: Option<u64>,
}

impl ProcessCounts {
    /// Instructions per second while idle.
    pub fn idle_ir_per_s(&self) -> f64 {
        if self.idle_s > 0.0 {
            self.idle_ir as f64 / self.idle_s
        } else {
            0.0
        }
    }

    /// The workload's instructions less the idle rate over its length (at
    /// least 0): what the events cost beyond the timers that run anyway.
    pub fn net_ir(&self) -> f64 {
        (self.workload_ir as f64 - self.idle_ir_per_s() * self.workload_s).max(0.0)
    }
}

/// One process's figures in one measurement.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessFigures {
    /// The counts they come from.
    #[serde(flatten)]
    pub counts: ProcessCounts,
    /// Instructions per second while idle.
    pub idle_ir_per_s: f64,
    /// The workload's instructions per event, idle time included.
    pub raw_ir_per_event: f64,
    /// Net of the idle rate: the headline figure.
    pub ir_per_event: f64,
}

impl ProcessFigures {
    /// The figures of `counts` for a workload of `events`.
    pub fn new(counts: ProcessCounts, events: u64) -> Self {
        let per = |x: f64| if events > 0 { x / events as f64 } else { 0.0 };
        Self {
            idle_ir_per_s: counts.idle_ir_per_s(),
            raw_ir_per_event: per(counts.workload_ir as f64),
            ir_per_event: per(counts.net_ir()),
            counts,
        }
    }
}

/// One measurement of the step (one per repetition).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Instructions {
    /// Events the simulator sent (all accepted, or a note says not).
    pub events: u64,
    /// Events sent and verified before counting.
    #[serde(default)]
    pub warmup_events: u64,
    /// Events per batch.
    pub batch_size: u32,
    /// Simulated devices.
    pub devices: u32,
    /// The simulator's seed.
    pub seed: u64,
    /// The simulator's rate (it sets the batch size: rate / 100).
    pub rate: f64,
    /// Seconds into a wall-clock minute at which the ingest phase started.
    #[serde(default)]
    pub minute_offset_s: u64,
    /// Whether the simulator verified every event processed exactly once.
    pub verified: bool,
    /// Batches the simulator re-sent (each is work beyond the fixed
    /// workload, so the figure of such a run is not comparable).
    pub retried_batches: u64,
    /// Flags the services ran with beyond the pipeline's (why: the
    /// step's docs).
    pub service_flags: Vec<String>,
    /// `valgrind --version`.
    pub valgrind: String,
    /// `ingest`, then `worker`.
    pub processes: Vec<ProcessFigures>,
    /// What makes this measurement doubtful.
    pub notes: Vec<String>,
    /// Wall time of the step, s.
    pub wall_s: f64,
}

impl Instructions {
    /// The figures of process `name`.
    pub fn process(&self, name: &str) -> Option<&ProcessFigures> {
        self.processes.iter().find(|p| p.counts.name == name)
    }
}

/// The median of `values` (the mean of the middle two of an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// (largest − smallest) / median: how far apart the repetitions are.
/// None with fewer than two values or a zero median.
pub fn spread(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let m = median(values)?;
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    (m > 0.0).then(|| (max - min) / m)
}

/// The step's per-repetition figures of process `name`, by `figure`.
fn column(runs: &[&Instructions], name: &str, figure: impl Fn(&ProcessFigures) -> f64) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| r.process(name).map(&figure))
        .collect()
}

fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_owned(), |x| format!("{:.2}%", x * 100.0))
}

/// The step's Markdown section: one row per repetition, then the median
/// and spread, and the row to copy into `bench/README.md`'s log.
pub fn render(out: &mut String, runs: &[Option<&Instructions>], revision: &str) {
    let done: Vec<&Instructions> = runs.iter().flatten().copied().collect();
    let Some(first) = done.first() else { return };
    let _ = writeln!(out, "\n## Instructions per event (callgrind)\n");
    let _ = writeln!(
        out,
        "`testbed ingest` and `testbed worker` each under `valgrind --tool=callgrind` ({}), on a fresh Redis; a fixed workload: `testbed sim --seed {} --devices {} --rate {:.0} --connections 1 --streams 1 --verify`, {} events in batches of {}, after a warm-up of {} events. Ingest's count is the *ingest phase* (workers paused, started {} s into a wall-clock minute, until every event is appended), the worker's the *worker phase* (resumed until the simulator verified every event applied exactly once), both between callgrind dumps (instructions, Ir, of every thread). *Net* subtracts the process's idle rate (an idle window before the load) times the phase's length; *raw* does not. Extra flags: `{}`. How to read and compare: bench/README.md, \"Instructions per event\".\n",
        first.valgrind,
        first.seed,
        first.devices,
        first.rate,
        first.events,
        first.batch_size,
        first.warmup_events,
        first.minute_offset_s,
        first.service_flags.join("`; `")
    );
    let _ = writeln!(
        out,
        "| repetition | ingest net Ir/event | worker net Ir/event | ingest raw Ir/event | worker raw Ir/event | ingest idle Ir/s | worker idle Ir/s | phase s (ingest / worker) | verified, re-sent batches |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        let Some(r) = r else { continue };
        let f = |name: &str, g: fn(&ProcessFigures) -> f64| {
            r.process(name)
                .map_or_else(|| "–".to_owned(), |p| thousands(g(p)))
        };
        let phase = |name: &str| r.process(name).map_or(0.0, |p| p.counts.workload_s);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} / {:.1} | {}, {} |",
            i + 1,
            f("ingest", |p| p.ir_per_event),
            f("worker", |p| p.ir_per_event),
            f("ingest", |p| p.raw_ir_per_event),
            f("worker", |p| p.raw_ir_per_event),
            f("ingest", |p| p.idle_ir_per_s),
            f("worker", |p| p.idle_ir_per_s),
            phase("ingest"),
            phase("worker"),
            if r.verified { "yes" } else { "**no**" },
            r.retried_batches
        );
    }
    let net = |name: &str| column(&done, name, |p| p.ir_per_event);
    let raw = |name: &str| column(&done, name, |p| p.raw_ir_per_event);
    let med = |v: Vec<f64>| median(&v).map_or_else(|| "–".to_owned(), thousands);
    if done.len() > 1 {
        let _ = writeln!(
            out,
            "| median | {} | {} | {} | {} | | | | |",
            med(net("ingest")),
            med(net("worker")),
            med(raw("ingest")),
            med(raw("worker"))
        );
        let _ = writeln!(
            out,
            "| spread (max − min) / median | {} | {} | {} | {} | | | | |",
            percent(spread(&net("ingest"))),
            percent(spread(&net("worker"))),
            percent(spread(&raw("ingest"))),
            percent(spread(&raw("worker")))
        );
    }
    let _ = writeln!(
        out,
        "\nRow for the log in `bench/README.md` (revision; ingest and worker Ir/event, net and raw, medians; spreads over {} repetition(s)):\n\n`| {} | {} | {} | {} | {} | {} / {} | {} / {} |`",
        done.len(),
        revision,
        med(net("ingest")),
        med(raw("ingest")),
        med(net("worker")),
        med(raw("worker")),
        percent(spread(&net("ingest"))),
        percent(spread(&raw("ingest"))),
        percent(spread(&net("worker"))),
        percent(spread(&raw("worker")))
    );
    for (i, r) in runs.iter().enumerate() {
        let Some(r) = r else { continue };
        for n in &r.notes {
            let _ = writeln!(out, "\n- repetition {}: {n}", i + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(name: &str, idle_ir: u64, workload_ir: u64) -> ProcessCounts {
        ProcessCounts {
            name: name.into(),
            startup_ir: 5_000_000,
            idle_ir,
            idle_s: 10.0,
            workload_ir,
            workload_s: 4.0,
            phase_ir: [workload_ir, idle_ir],
            phase_s: [4.0, 10.0],
            shutdown_ir: Some(1_000),
        }
    }

    /// Net instructions per event subtract the idle rate over the
    /// workload's length: 1 000 000 idle Ir in 10 s is 100 000/s, so 4 s of
    /// workload carry 400 000 idle Ir out of 2 400 000; 2 000 000 over
    /// 1 000 events is 2 000 per event (raw: 2 400).
    #[test]
    fn net_figure_subtracts_the_idle_rate() {
        let f = ProcessFigures::new(counts("ingest", 1_000_000, 2_400_000), 1_000);
        assert_eq!(f.idle_ir_per_s, 100_000.0);
        assert_eq!(f.raw_ir_per_event, 2_400.0);
        assert_eq!(f.ir_per_event, 2_000.0);
    }

    /// A workload cheaper than its idle share is 0, not negative; no
    /// events and no idle window give 0 rather than a division by zero.
    #[test]
    fn degenerate_counts_stay_finite() {
        let f = ProcessFigures::new(counts("worker", 10_000_000, 1_000), 10);
        assert_eq!(f.ir_per_event, 0.0);
        let mut c = counts("worker", 0, 500);
        c.idle_s = 0.0;
        let f = ProcessFigures::new(c, 0);
        assert_eq!((f.idle_ir_per_s, f.ir_per_event), (0.0, 0.0));
    }

    /// Median and spread: odd and even counts; one value has no spread.
    #[test]
    fn median_and_spread() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(spread(&[1000.0, 1010.0, 1005.0]), Some(10.0 / 1005.0));
        assert_eq!(spread(&[7.0]), None);
    }

    fn run(ingest: u64, worker: u64) -> Instructions {
        Instructions {
            events: 1_000,
            batch_size: 1_000,
            devices: 100,
            seed: 1,
            rate: 100_000.0,
            verified: true,
            service_flags: vec!["--redis-timeout".into(), "60s".into()],
            valgrind: "valgrind-3.19.0".into(),
            processes: vec![
                ProcessFigures::new(counts("ingest", 0, ingest), 1_000),
                ProcessFigures::new(counts("worker", 0, worker), 1_000),
            ],
            ..Default::default()
        }
    }

    /// The section shows each repetition, the median and spread, and the
    /// log row with the revision and the median figures.
    #[test]
    fn renders_rows_median_spread_and_log_row() {
        let (a, b, c) = (
            run(40_000_000, 90_000_000),
            run(40_400_000, 90_000_000),
            run(40_200_000, 90_900_000),
        );
        let mut out = String::new();
        render(&mut out, &[Some(&a), Some(&b), Some(&c)], "abc123");
        assert!(
            out.contains("## Instructions per event (callgrind)"),
            "{out}"
        );
        assert!(
            out.contains("| 2 | 40\u{202f}400 | 90\u{202f}000 |"),
            "{out}"
        );
        assert!(
            out.contains("| median | 40\u{202f}200 | 90\u{202f}000 |"),
            "{out}"
        );
        // Ingest: (40 400 − 40 000) / 40 200; worker: 900 / 90 000.
        assert!(
            out.contains("| spread (max − min) / median | 1.00% | 1.00% |"),
            "{out}"
        );
        // Idle counts are 0 here, so net and raw agree.
        assert!(
            out.contains("`| abc123 | 40\u{202f}200 | 40\u{202f}200 | 90\u{202f}000 | 90\u{202f}000 | 1.00% / 1.00% | 1.00% / 1.00% |`"),
            "{out}"
        );
    }

    /// Without the step, nothing is rendered.
    #[test]
    fn renders_nothing_without_the_step() {
        let mut out = String::new();
        render(&mut out, &[None, None], "abc");
        assert!(out.is_empty());
    }
}
