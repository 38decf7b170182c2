//! The query-scale step's figures and how they are judged and shown:
//! percentiles of the timed reads, the step's summary row, its verdicts
//! against #32's targets and its Markdown section. Pure: the step itself
//! (processes, fill, timed calls) is [`crate::query_scale`].

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The reads timed at every fleet size, in the order they run and are
/// shown: `(name, what it sends)`.
pub const READS: [(&str, &str); 6] = [
    ("list", "ListDevices(10)"),
    ("list_arm64", "ListDevices(10, `arch=arm64`)"),
    ("top_events", "TopDevices(10) by events, default window"),
    (
        "top_gpu",
        "TopDevices(10) by GPU utilisation, default window",
    ),
    ("device_stats", "GetDeviceStats, default window"),
    ("token_usage", "GetTokenUsage, default window"),
];

/// The targets (#32, on this 2-core machine, at 1 000 000 devices).
pub mod targets {
    /// ListDevices p99, with or without an indexed filter, ms.
    pub const LIST_P99_MS: f64 = 10.0;
    /// TopDevices p99 over the default window, ms.
    pub const TOP_P99_MS: f64 = 50.0;
    /// GetDeviceStats p99, ms.
    pub const DEVICE_STATS_P99_MS: f64 = 5.0;
    /// Ingest ack p99 with a polling client, at most this times without.
    pub const HARM_RATIO: f64 = 1.2;
    /// The fleet size the read targets are set at.
    pub const AT_DEVICES: u64 = 1_000_000;
}

/// Percentiles of one read's successful calls, ms.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReadFigures {
    /// One of [`READS`]' names.
    pub name: String,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (their status codes in `errors`).
    pub failed: u64,
    /// Nearest-rank median.
    pub p50_ms: f64,
    /// Nearest-rank 99th percentile.
    pub p99_ms: f64,
    /// Slowest call.
    pub max_ms: f64,
    /// Distinct failures, `CODE: message` (at most a few).
    #[serde(default)]
    pub errors: Vec<String>,
    /// Every successful call's time, ms, in call order.
    #[serde(default)]
    pub samples_ms: Vec<f64>,
}

/// One fleet size: the fill, the store's size, the reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FleetSize {
    /// `--devices` of the simulator's fill.
    pub devices: u64,
    /// Devices the store indexed (`ZCARD` of every partition's id index).
    pub indexed: u64,
    /// Events the fill sent and the pipeline accepted.
    pub fill_sent: u64,
    /// Accepted of them.
    pub fill_accepted: u64,
    /// The fill's schedule, s.
    pub fill_schedule_s: f64,
    /// From the fill's start until backlog and pending were 0, s.
    pub fill_s: f64,
    /// `used_memory` after the fill was processed, bytes.
    pub used_memory: u64,
    /// `used_memory` of the fresh stack before the fill, bytes.
    pub used_memory_empty: u64,
    /// `/proc/loadavg` when the reads started.
    pub loadavg: String,
    /// One per [`READS`].
    pub reads: Vec<ReadFigures>,
}

impl FleetSize {
    /// Redis memory per indexed device, over the empty stack's, bytes.
    pub fn memory_per_device(&self) -> Option<f64> {
        (self.indexed > 0).then(|| {
            self.used_memory.saturating_sub(self.used_memory_empty) as f64 / self.indexed as f64
        })
    }

    /// The read named `name`.
    pub fn read(&self, name: &str) -> Option<&ReadFigures> {
        self.reads.iter().find(|r| r.name == name)
    }
}

/// One simulator run of the write-harm comparison.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HarmRun {
    /// A client polled the query API during it.
    pub polled: bool,
    /// Batch-ack p50, ms.
    pub ack_p50_ms: f64,
    /// Batch-ack p99, ms.
    pub ack_p99_ms: f64,
    /// Events sent.
    pub sent: u64,
    /// Events accepted.
    pub accepted: u64,
    /// The poller's calls (ListDevices and TopDevices together), if any.
    pub poller: Option<ReadFigures>,
    /// `/proc/loadavg` when it started.
    pub loadavg: String,
}

/// The write-harm comparison at the largest fleet: ack p99 of a fixed
/// load without, then with, a client polling ListDevices(10) and
/// TopDevices(10) every interval; `rounds` pairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Harm {
    /// The fleet it ran on.
    pub devices: u64,
    /// Offered events/s.
    pub rate: f64,
    /// Each run's schedule, s.
    pub duration_s: f64,
    /// The poller's interval, ms.
    pub poll_interval_ms: f64,
    /// Runs in order: without, with, without, with...
    pub runs: Vec<HarmRun>,
}

impl Harm {
    /// Median ack p99 without and with the poller, and their ratio.
    pub fn p99s(&self) -> Option<(f64, f64, f64)> {
        let of = |polled: bool| {
            let mut v: Vec<f64> = self
                .runs
                .iter()
                .filter(|r| r.polled == polled && r.accepted > 0)
                .map(|r| r.ack_p99_ms)
                .collect();
            median(&mut v)
        };
        let (without, with) = (of(false)?, of(true)?);
        (without > 0.0).then(|| (without, with, with / without))
    }
}

/// The query-scale step of one repetition.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QueryScale {
    /// Timed calls per read and size.
    pub reads_per_size: u32,
    /// The fill's offered rate, events/s.
    pub fill_rate: f64,
    /// One per fleet size, smallest first.
    pub sizes: Vec<FleetSize>,
    /// At the largest size.
    pub harm: Option<Harm>,
    /// What went wrong on the way (a size not filled in time...).
    pub notes: Vec<String>,
}

/// The median (mean of the middle two for an even count). Its own, as
/// `results` imports this module.
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The nearest-rank `q`-quantile (0 < q <= 1) of `sorted` (ascending).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// `q` without the raw call times (for the summaries).
pub fn without_samples(q: &QueryScale) -> QueryScale {
    let mut q = q.clone();
    for s in &mut q.sizes {
        for r in &mut s.reads {
            r.samples_ms.clear();
        }
    }
    if let Some(h) = &mut q.harm {
        for r in h.runs.iter_mut().filter_map(|r| r.poller.as_mut()) {
            r.samples_ms.clear();
        }
    }
    q
}

/// Figures of one read from its successful calls' times and its failures.
pub fn figures(name: &str, samples_ms: Vec<f64>, errors: &[String]) -> ReadFigures {
    let mut sorted = samples_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let mut distinct: Vec<String> = Vec::new();
    for e in errors {
        if distinct.len() < 5 && !distinct.contains(e) {
            distinct.push(e.clone());
        }
    }
    ReadFigures {
        name: name.to_owned(),
        calls: (samples_ms.len() + errors.len()) as u64,
        failed: errors.len() as u64,
        p50_ms: quantile(&sorted, 0.5).unwrap_or(0.0),
        p99_ms: quantile(&sorted, 0.99).unwrap_or(0.0),
        max_ms: sorted.last().copied().unwrap_or(0.0),
        errors: distinct,
        samples_ms,
    }
}

/// A read's p99 for a verdict: none if it was not measured; a read with
/// any failed call misses whatever its successful calls took.
fn p99_of(size: &FleetSize, name: &str) -> Option<(f64, u64)> {
    size.read(name)
        .filter(|r| r.calls > 0)
        .map(|r| (r.p99_ms, r.failed))
}

/// The verdicts of the step: `(target, Some((measured, met)))`, or `None`
/// where nothing was measured. The read targets are judged at the
/// largest size measured, which the text names (the targets are set at
/// [`targets::AT_DEVICES`]: a smaller largest size cannot meet them).
pub fn verdicts(q: Option<&QueryScale>) -> Vec<(&'static str, Option<(String, bool)>)> {
    let largest = q.and_then(|q| q.sizes.iter().max_by_key(|s| s.devices));
    let judge = |names: &[&str], limit: f64| -> Option<(String, bool)> {
        let size = largest?;
        let mut parts = Vec::new();
        let mut met = size.devices >= targets::AT_DEVICES;
        for name in names {
            let (p99, failed) = p99_of(size, name)?;
            met &= failed == 0 && p99 <= limit;
            let fails = if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            };
            parts.push(format!("{name} {p99:.2} ms{fails}"));
        }
        Some((
            format!("p99 {} at {} devices", parts.join("; "), size.devices),
            met,
        ))
    };
    let harm = q.and_then(|q| q.harm.as_ref()).and_then(|h| {
        let (without, with, ratio) = h.p99s()?;
        Some((
            format!(
                "ack p99 {without:.2} ms without, {with:.2} ms with the poller ({:+.0}%) at {:.0} events/s, {} devices",
                (ratio - 1.0) * 100.0,
                h.rate,
                h.devices
            ),
            ratio <= targets::HARM_RATIO && h.devices >= targets::AT_DEVICES,
        ))
    });
    vec![
        (
            "ListDevices p99 <= 10 ms at 1 000 000 devices, with and without an indexed filter",
            judge(&["list", "list_arm64"], targets::LIST_P99_MS),
        ),
        (
            "TopDevices p99 <= 50 ms at 1 000 000 devices, default window",
            judge(&["top_events", "top_gpu"], targets::TOP_P99_MS),
        ),
        (
            "GetDeviceStats p99 <= 5 ms at 1 000 000 devices",
            judge(&["device_stats"], targets::DEVICE_STATS_P99_MS),
        ),
        (
            "ingest ack p99 with a client polling ListDevices and TopDevices every 100 ms within 20% of without",
            harm,
        ),
    ]
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// The step's section of the Markdown: one table per repetition.
pub fn render(out: &mut String, runs: &[Option<&QueryScale>]) {
    for (i, q) in runs.iter().enumerate() {
        let Some(q) = q else { continue };
        let rep = if runs.len() > 1 {
            format!(", repetition {}", i + 1)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "\n## Query at fleet scale (`testbed all --max-tracked-devices 0`{rep})\n"
        );
        let _ = writeln!(
            out,
            "Each fleet on a fresh Redis, filled by `testbed sim --rate {:.0} --batch-size 1000 --devices N` until backlog and pending were 0; then each read {} times in a row from one Rust client. p50 / p99 / max in ms (nearest rank); failed calls counted beside.\n",
            q.fill_rate, q.reads_per_size
        );
        let mut head = String::from("| devices |");
        let mut rule = String::from("|---|");
        for (_, label) in READS {
            let _ = write!(head, " {label} |");
            rule.push_str("---|");
        }
        let _ = writeln!(out, "{head}\n{rule}");
        for s in &q.sizes {
            let mut row = format!("| {} |", s.devices);
            for (name, _) in READS {
                match s.read(name) {
                    Some(r) if r.calls > r.failed => {
                        let failed = if r.failed > 0 {
                            format!(" ({} of {} failed)", r.failed, r.calls)
                        } else {
                            String::new()
                        };
                        let _ = write!(
                            row,
                            " {:.2} / {:.2} / {:.2}{failed} |",
                            r.p50_ms, r.p99_ms, r.max_ms
                        );
                    }
                    Some(r) if r.calls > 0 => {
                        let _ = write!(
                            row,
                            " all {} failed: {} |",
                            r.calls,
                            r.errors.first().map_or("", String::as_str)
                        );
                    }
                    _ => row.push_str(" – |"),
                }
            }
            let _ = writeln!(out, "{row}");
        }
        let _ = writeln!(
            out,
            "\n| devices | indexed | fill: accepted of sent | fill schedule → processed | Redis used_memory (empty → filled) | per device | load average at the reads |\n|---|---|---|---|---|---|---|"
        );
        for s in &q.sizes {
            let _ = writeln!(
                out,
                "| {} | {} | {} of {} | {:.0} s → {:.0} s | {} → {} MiB | {} bytes | {} |",
                s.devices,
                s.indexed,
                s.fill_accepted,
                s.fill_sent,
                s.fill_schedule_s,
                s.fill_s,
                mib(s.used_memory_empty),
                mib(s.used_memory),
                s.memory_per_device()
                    .map_or("–".to_owned(), |b| format!("{b:.0}")),
                s.loadavg
            );
        }
        let _ = writeln!(
            out,
            "\nPer device: `INFO memory` `used_memory` after the fill minus the empty stack's, over the devices indexed. It counts everything the fill left in Redis: device states, the id and label indexes, the per-minute device records and rankings of the fill's minutes, the token and latency hashes, and the stream entries not yet trimmed."
        );
        if let Some(h) = &q.harm {
            let _ = writeln!(
                out,
                "\nWrite path at {} devices: `testbed sim --rate {:.0} --duration {:.0}s --batch-size 200`, without and with one client calling ListDevices(10) and TopDevices(10) every {:.0} ms, in turn.\n",
                h.devices, h.rate, h.duration_s, h.poll_interval_ms
            );
            let _ = writeln!(
                out,
                "| poller | ack p50 ms | ack p99 ms | accepted of sent | poller calls: p50 / p99 / max ms (failed) | load average |\n|---|---|---|---|---|---|"
            );
            for r in &h.runs {
                let poller = r.poller.as_ref().map_or("–".to_owned(), |p| {
                    format!(
                        "{:.2} / {:.2} / {:.2} ({} of {})",
                        p.p50_ms, p.p99_ms, p.max_ms, p.failed, p.calls
                    )
                });
                let _ = writeln!(
                    out,
                    "| {} | {:.2} | {:.2} | {} of {} | {poller} | {} |",
                    if r.polled { "yes" } else { "no" },
                    r.ack_p50_ms,
                    r.ack_p99_ms,
                    r.accepted,
                    r.sent,
                    r.loadavg
                );
            }
            if let Some((without, with, ratio)) = h.p99s() {
                let _ = writeln!(
                    out,
                    "\nMedian ack p99: {without:.2} ms without, {with:.2} ms with the poller: {ratio:.2}× (target at most {:.1}×).",
                    targets::HARM_RATIO
                );
            }
        }
        for n in &q.notes {
            let _ = writeln!(out, "\n- {n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str, p99: f64, failed: u64) -> ReadFigures {
        ReadFigures {
            name: name.into(),
            calls: 100,
            failed,
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            max_ms: p99 * 1.5,
            ..Default::default()
        }
    }

    fn size(devices: u64, reads: Vec<ReadFigures>) -> FleetSize {
        FleetSize {
            devices,
            indexed: devices,
            used_memory: 1_000 + devices * 500,
            used_memory_empty: 1_000,
            reads,
            ..Default::default()
        }
    }

    fn harm(without: &[f64], with: &[f64], devices: u64) -> Harm {
        let run = |polled, p99| HarmRun {
            polled,
            ack_p99_ms: p99,
            sent: 10,
            accepted: 10,
            ..Default::default()
        };
        Harm {
            devices,
            rate: 20_000.0,
            duration_s: 10.0,
            poll_interval_ms: 100.0,
            runs: without
                .iter()
                .map(|p| run(false, *p))
                .chain(with.iter().map(|p| run(true, *p)))
                .collect(),
        }
    }

    /// Nearest rank: of 100 values 1..=100 the p50 is 50 and the p99 99;
    /// a single value is every quantile; nothing has none.
    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
        // Five calls: the p99 is the slowest.
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.99), Some(5.0));
    }

    /// Figures sort the samples for the percentiles but keep them in call
    /// order, and count failures apart, each distinct one named once.
    #[test]
    fn figures_of_a_read() {
        let errors = vec!["DEADLINE_EXCEEDED: x".to_owned(); 2];
        let f = figures("list", vec![3.0, 1.0, 2.0], &errors);
        assert_eq!((f.calls, f.failed), (5, 2));
        assert_eq!((f.p50_ms, f.p99_ms, f.max_ms), (2.0, 3.0, 3.0));
        assert_eq!(f.samples_ms, vec![3.0, 1.0, 2.0]);
        assert_eq!(f.errors, vec!["DEADLINE_EXCEEDED: x"]);
    }

    /// Memory per device is over the empty stack and per indexed device.
    #[test]
    fn memory_per_device() {
        assert_eq!(size(1_000, vec![]).memory_per_device(), Some(500.0));
        assert_eq!(size(0, vec![]).memory_per_device(), None);
    }

    /// Reads are judged at the largest size against their own limits; a
    /// failed call, a slow read, or a largest size under a million misses.
    #[test]
    fn judges_the_reads() {
        let fast = vec![
            read("list", 2.0, 0),
            read("list_arm64", 9.9, 0),
            read("top_events", 12.0, 0),
            read("top_gpu", 49.0, 0),
            read("device_stats", 5.1, 0),
        ];
        let q = QueryScale {
            sizes: vec![
                size(1_000, vec![read("list", 500.0, 0)]),
                size(1_000_000, fast.clone()),
            ],
            ..Default::default()
        };
        let v = verdicts(Some(&q));
        assert_eq!(v.len(), 4);
        let (text, met) = v[0].1.clone().unwrap();
        assert!(met, "{text}");
        assert_eq!(
            text,
            "p99 list 2.00 ms; list_arm64 9.90 ms at 1000000 devices"
        );
        assert_eq!(v[1].1.as_ref().map(|m| m.1), Some(true));
        assert_eq!(v[2].1.as_ref().map(|m| m.1), Some(false));
        assert_eq!(v[3].1, None);

        let mut failing = fast.clone();
        failing[1] = read("list_arm64", 1.0, 3);
        let q = QueryScale {
            sizes: vec![size(1_000_000, failing)],
            ..Default::default()
        };
        let (text, met) = verdicts(Some(&q))[0].1.clone().unwrap();
        assert!(!met);
        assert!(text.contains("list_arm64 1.00 ms, 3 failed"), "{text}");

        let q = QueryScale {
            sizes: vec![size(100_000, fast)],
            ..Default::default()
        };
        let (text, met) = verdicts(Some(&q))[0].1.clone().unwrap();
        assert!(!met, "a smaller fleet does not meet a million's target");
        assert!(text.ends_with("at 100000 devices"), "{text}");
        assert!(verdicts(None).iter().all(|(_, m)| m.is_none()));
    }

    /// The write-harm target compares median p99s: 20% more is met, more
    /// than that is not; runs that accepted nothing are left out.
    #[test]
    fn judges_the_write_harm() {
        let h = harm(&[10.0, 14.0], &[12.0, 13.5], 1_000_000);
        assert_eq!(h.p99s(), Some((12.0, 12.75, 12.75 / 12.0)));
        let q = QueryScale {
            harm: Some(h),
            ..Default::default()
        };
        let (text, met) = verdicts(Some(&q))[3].1.clone().unwrap();
        assert!(met, "{text}");
        assert!(text.starts_with("ack p99 12.00 ms without, 12.75 ms with the poller (+6%)"));

        let q = QueryScale {
            harm: Some(harm(&[10.0], &[12.5], 1_000_000)),
            ..Default::default()
        };
        assert_eq!(verdicts(Some(&q))[3].1.as_ref().map(|m| m.1), Some(false));

        let mut h = harm(&[10.0], &[11.0], 1_000_000);
        h.runs[1].accepted = 0;
        assert_eq!(h.p99s(), None);
    }

    /// The section shows each read's figures, failures, memory per device
    /// and the harm comparison.
    #[test]
    fn renders_the_section() {
        let mut reads = vec![read("list", 2.0, 0)];
        reads.push(ReadFigures {
            name: "top_events".into(),
            calls: 5,
            failed: 5,
            errors: vec!["DEADLINE_EXCEEDED: budget".into()],
            ..Default::default()
        });
        let q = QueryScale {
            reads_per_size: 100,
            fill_rate: 100_000.0,
            sizes: vec![size(1_000, reads)],
            harm: Some(harm(&[10.0], &[11.0], 1_000)),
            notes: vec!["a note".into()],
        };
        let mut out = String::new();
        render(&mut out, &[Some(&q)]);
        assert!(out.contains("| 1000 | 1.00 / 2.00 / 3.00 |"), "{out}");
        assert!(
            out.contains("all 5 failed: DEADLINE_EXCEEDED: budget"),
            "{out}"
        );
        assert!(out.contains("| 500 bytes |"), "{out}");
        assert!(
            out.contains("10.00 ms without, 11.00 ms with the poller: 1.10×"),
            "{out}"
        );
        assert!(out.contains("- a note"), "{out}");
    }
}
