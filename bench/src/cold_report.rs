//! The cold-start step's figures and how they are judged and shown: each
//! start's times, one summary row per role (median and max), the verdict
//! against the 100 ms target and the Markdown section. Pure: the step
//! itself (processes, polling) is [`crate::cold_start`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Target: spawn to every health status `SERVING`, ms.
pub const TARGET_MS: f64 = 100.0;

/// One start of a process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColdStartRun {
    /// From spawn until a gRPC channel to its port connected, ms.
    pub connected_ms: Option<f64>,
    /// From spawn until every health name answered `SERVING`, ms; none:
    /// it never did (see `error`).
    pub serving_ms: Option<f64>,
    /// When each name was first seen `SERVING`, ms from spawn.
    pub serving_at_ms: BTreeMap<String, f64>,
    /// Rounds of checks sent over the channel until then.
    pub checks: u64,
    /// From SIGTERM to its exit, ms.
    pub stop_ms: Option<f64>,
    /// Why the start failed, or did not end cleanly.
    pub error: Option<String>,
}

/// Every start of one role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColdStartRole {
    /// `all`, `ingest`, `worker` or `query`.
    pub role: String,
    /// `embedded` or `redis`.
    pub store: String,
    /// The health names polled (`""` first).
    pub health_names: Vec<String>,
    /// The services its reflection listed after the first start.
    pub registered: Vec<String>,
    /// In order.
    pub runs: Vec<ColdStartRun>,
    /// `/proc/loadavg` before its first start.
    #[serde(default)]
    pub loadavg: String,
}

impl ColdStartRole {
    /// Services the process lists that have a health status of their own
    /// but were not polled (health and reflection themselves are served
    /// without one).
    pub fn unpolled(&self) -> Vec<String> {
        self.registered
            .iter()
            .filter(|s| !s.starts_with("grpc.health.") && !s.starts_with("grpc.reflection."))
            .filter(|s| !self.health_names.contains(s))
            .cloned()
            .collect()
    }
}

/// The cold-start step of one repetition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColdStart {
    /// Starts per role.
    pub runs_per_role: u32,
    /// Poll interval, ms.
    pub poll_ms: f64,
    /// One per role, in [`crate::cold_start::ROLES`]' order.
    pub roles: Vec<ColdStartRole>,
}

/// One role, summarised (the repetition's median summary takes the
/// median of each field).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColdStartRow {
    /// The role.
    pub role: String,
    /// Its store.
    pub store: String,
    /// Starts measured.
    pub runs: u32,
    /// Starts that never became `SERVING` or did not stop cleanly.
    pub failed: u32,
    /// Median spawn to `SERVING` over the starts that got there, ms.
    pub median_ms: Option<f64>,
    /// Largest of them, ms.
    pub max_ms: Option<f64>,
    /// Median spawn to connected, ms.
    pub connected_median_ms: Option<f64>,
    /// Median SIGTERM to exit, ms.
    pub stop_median_ms: Option<f64>,
    /// Services listed but not polled (see [`ColdStartRole::unpolled`]).
    #[serde(default)]
    pub unpolled: Vec<String>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    crate::results::median(&mut v)
}

/// The summary rows of a step.
pub fn rows(c: &ColdStart) -> Vec<ColdStartRow> {
    c.roles
        .iter()
        .map(|r| {
            let serving: Vec<f64> = r.runs.iter().filter_map(|x| x.serving_ms).collect();
            ColdStartRow {
                role: r.role.clone(),
                store: r.store.clone(),
                runs: r.runs.len() as u32,
                failed: r.runs.iter().filter(|x| x.error.is_some()).count() as u32,
                max_ms: serving.iter().copied().max_by(f64::total_cmp),
                median_ms: median(serving),
                connected_median_ms: median(r.runs.iter().filter_map(|x| x.connected_ms).collect()),
                stop_median_ms: median(r.runs.iter().filter_map(|x| x.stop_ms).collect()),
                unpolled: r.unpolled(),
            }
        })
        .collect()
}

/// The target, and the measured text and whether it was met (none: not
/// measured). Judged on each role's median; met when the largest median
/// is within [`TARGET_MS`], no start failed and every listed service was
/// polled. The largest single start is named beside.
pub fn verdict(rows: &[ColdStartRow]) -> (&'static str, Option<(String, bool)>) {
    let target = "cold start: spawn to every health status SERVING <= 100 ms (`testbed all` embedded; ingest, worker, query on Redis)";
    let Some(worst) = rows
        .iter()
        .filter(|r| r.median_ms.is_some())
        .max_by(|a, b| {
            a.median_ms
                .unwrap_or(0.0)
                .total_cmp(&b.median_ms.unwrap_or(0.0))
        })
    else {
        return (target, None);
    };
    let largest = worst.median_ms.unwrap_or(0.0);
    let max = rows.iter().filter_map(|r| r.max_ms).fold(0.0f64, f64::max);
    let failed: u32 = rows.iter().map(|r| r.failed).sum();
    let unpolled: Vec<&String> = rows.iter().flat_map(|r| &r.unpolled).collect();
    let each = rows
        .iter()
        .map(|r| format!("{} {}", r.role, opt(r.median_ms)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!(
        "largest median {largest:.1} ms ({} on {}); medians {each} ms; slowest start {max:.1} ms",
        worst.role, worst.store
    );
    if failed > 0 {
        let _ = write!(text, "; {failed} starts failed");
    }
    if !unpolled.is_empty() {
        let _ = write!(text, "; not polled: {unpolled:?}");
    }
    let met = largest <= TARGET_MS && failed == 0 && unpolled.is_empty();
    (target, Some((text, met)))
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
}

/// The step's section: the median rows, then every start of the first
/// repetition that ran it.
pub fn render(out: &mut String, median_rows: &[ColdStartRow], first: Option<&ColdStart>) {
    if median_rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Cold start (spawn to every health status SERVING)\n"
    );
    if let Some(c) = first {
        let _ = writeln!(
            out,
            "Each role started {} times, on a fresh `redis-server` per start where it uses Redis; the harness connects and checks health every {:.0} ms from the spawn on, over one channel once connected. Target: {TARGET_MS:.0} ms.\n",
            c.runs_per_role, c.poll_ms
        );
    }
    let _ = writeln!(
        out,
        "| role | store | starts (failed) | SERVING median ms | SERVING max ms | connected median ms | SIGTERM to exit median ms |\n|---|---|---|---|---|---|---|"
    );
    for r in median_rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} ({}) | {} | {} | {} | {} |",
            r.role,
            r.store,
            r.runs,
            r.failed,
            opt(r.median_ms),
            opt(r.max_ms),
            opt(r.connected_median_ms),
            opt(r.stop_median_ms)
        );
    }
    let Some(c) = first else { return };
    let _ = writeln!(
        out,
        "\nEvery start (ms from spawn: connected → every name SERVING):\n"
    );
    for r in &c.roles {
        let starts: Vec<String> = r
            .runs
            .iter()
            .map(|x| match (&x.error, x.serving_ms) {
                (Some(e), _) => format!("failed ({})", e.replace('|', "/")),
                (None, Some(s)) => format!("{} → {s:.1}", opt(x.connected_ms)),
                (None, None) => "–".to_owned(),
            })
            .collect();
        let _ = writeln!(
            out,
            "- {} ({}; load average {}): {}",
            r.role,
            r.store,
            r.loadavg,
            starts.join("; ")
        );
        for name in r.unpolled() {
            let _ = writeln!(
                out,
                "  - **{name}** is listed by reflection but was not polled"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(serving: Option<f64>) -> ColdStartRun {
        ColdStartRun {
            connected_ms: serving.map(|s| s / 2.0),
            serving_ms: serving,
            stop_ms: Some(5.0),
            error: serving
                .is_none()
                .then(|| "not SERVING within 10s".to_owned()),
            ..Default::default()
        }
    }

    fn role(name: &str, starts: &[Option<f64>]) -> ColdStartRole {
        ColdStartRole {
            role: name.into(),
            store: "redis".into(),
            health_names: vec![String::new(), format!("testbed.v1.{name}")],
            registered: vec![
                format!("testbed.v1.{name}"),
                "grpc.health.v1.Health".into(),
                "grpc.reflection.v1.ServerReflection".into(),
            ],
            runs: starts.iter().map(|s| run(*s)).collect(),
            loadavg: "0.5".into(),
        }
    }

    /// A role's row: median and max of the starts that got to SERVING,
    /// failures counted apart.
    #[test]
    fn rows_of_a_role() {
        let c = ColdStart {
            roles: vec![role("ingest", &[Some(30.0), Some(10.0), None, Some(20.0)])],
            ..Default::default()
        };
        let r = &rows(&c)[0];
        assert_eq!((r.runs, r.failed), (4, 1));
        assert_eq!((r.median_ms, r.max_ms), (Some(20.0), Some(30.0)));
        assert_eq!(r.connected_median_ms, Some(10.0));
        assert_eq!(r.stop_median_ms, Some(5.0));
        assert!(r.unpolled.is_empty());
    }

    /// A listed service without a health poll is named; health and
    /// reflection are not.
    #[test]
    fn unpolled_services_are_found() {
        let mut r = role("ingest", &[Some(1.0)]);
        r.registered.push("testbed.v1.QueryService".into());
        assert_eq!(r.unpolled(), vec!["testbed.v1.QueryService"]);
    }

    /// Judged on the largest median: 100 ms is met, more is not, and a
    /// failed start or an unpolled service fails it whatever the times.
    #[test]
    fn judges_the_largest_median() {
        let c = ColdStart {
            roles: vec![
                role("all", &[Some(12.0), Some(14.0), Some(13.0)]),
                role("worker", &[Some(100.0), Some(150.0), Some(90.0)]),
            ],
            ..Default::default()
        };
        let rows_ = rows(&c);
        let (_, measured) = verdict(&rows_);
        let (text, met) = measured.unwrap();
        assert!(met, "{text}");
        assert_eq!(
            text,
            "largest median 100.0 ms (worker on redis); medians all 13.0, worker 100.0 ms; slowest start 150.0 ms"
        );

        let mut slow = rows_.clone();
        slow[1].median_ms = Some(100.5);
        assert_eq!(verdict(&slow).1.map(|m| m.1), Some(false));

        let mut failed = rows_.clone();
        failed[0].failed = 1;
        let (text, met) = verdict(&failed).1.unwrap();
        assert!(!met && text.ends_with("; 1 starts failed"), "{text}");

        let mut unpolled = rows_;
        unpolled[0].unpolled = vec!["testbed.v1.X".into()];
        assert_eq!(verdict(&unpolled).1.map(|m| m.1), Some(false));

        assert_eq!(verdict(&[]).1, None);
    }

    /// The section shows the rows and every start, a failure with its
    /// reason.
    #[test]
    fn renders_the_section() {
        let c = ColdStart {
            runs_per_role: 2,
            poll_ms: 1.0,
            roles: vec![role("query", &[Some(20.0), None])],
        };
        let mut out = String::new();
        render(&mut out, &rows(&c), Some(&c));
        assert!(
            out.contains("| query | redis | 2 (1) | 20.0 | 20.0 | 10.0 | 5.0 |"),
            "{out}"
        );
        assert!(
            out.contains(
                "- query (redis; load average 0.5): 10.0 → 20.0; failed (not SERVING within 10s)"
            ),
            "{out}"
        );
        let mut none = String::new();
        render(&mut none, &[], None);
        assert!(none.is_empty());
    }
}
