//! The Markdown summary: the targets and whether each was met (as ratios
//! to the ceiling measured in the same run), then every step's table.

use std::fmt::Write as _;

use crate::results::{Record, RecoveryRow, Summary};
use crate::summary::is_service;

/// One target and its verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The target, in words.
    pub target: &'static str,
    /// What was measured.
    pub measured: String,
    /// Met, not met, or not measured.
    pub met: Option<bool>,
}

fn verdict(target: &'static str, measured: Option<(String, bool)>) -> Verdict {
    match measured {
        Some((measured, met)) => Verdict {
            target,
            measured,
            met: Some(met),
        },
        None => Verdict {
            target,
            measured: "not measured".into(),
            met: None,
        },
    }
}

/// Judges the targets on the (median) summary.
pub fn verdicts(m: &Summary) -> Vec<Verdict> {
    let services = || m.footprint.iter().filter(|f| is_service(&f.name));
    let idle_max = services()
        .filter_map(|f| f.idle_rss_mib.map(|r| (r, f.name.clone())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let peak_max = services()
        .map(|f| (f.peak_rss_mib, f.name.clone()))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let half = m.latency.iter().find(|l| (l.fraction - 0.5).abs() < 1e-9);
    let off = m.telemetry.iter().find(|t| t.mode == "off");
    let tenth = m.telemetry.iter().find(|t| t.mode == "0.1");
    let recovery = m.recovery.as_ref();
    let mut out = vec![
        verdict(
            "sustained end-to-end throughput >= 50% of the XADD ceiling",
            m.saturation_ratio
                .zip(m.saturation_rate)
                .map(|(ratio, rate)| {
                    (
                        format!("{:.1}% ({rate:.0} events/s)", ratio * 100.0),
                        ratio >= 0.5,
                    )
                }),
        ),
        verdict(
            "batch-ack p99 <= 5 ms at 50% of saturation",
            half.map(|l| {
                let floor = l
                    .floor_ack_p99_ms
                    .map(|f| format!(" (simulator and gRPC alone, against the stub: {f:.2} ms)"))
                    .unwrap_or_default();
                (
                    format!(
                        "{:.2} ms at {:.0} events/s{floor}",
                        l.ack_p99_ms, l.offered_rate
                    ),
                    l.ack_p99_ms <= 5.0,
                )
            }),
        ),
        verdict(
            "idle RSS <= 20 MiB per service process",
            idle_max.map(|(r, name)| (format!("largest {r:.1} MiB ({name})"), r <= 20.0)),
        ),
        verdict(
            "RSS <= 100 MiB per service process at saturation",
            peak_max.map(|(r, name)| (format!("largest peak {r:.1} MiB ({name})"), r <= 100.0)),
        ),
        verdict(
            "10% trace sampling costs <= 5% of saturation throughput",
            off.zip(tenth).and_then(|(off, on)| {
                if off.achieved_rate <= 0.0 {
                    return None;
                }
                let cpu = on.cpu_cost?;
                let rate = 1.0 - on.achieved_rate / off.achieved_rate;
                let range = on
                    .cpu_cost_range
                    .filter(|_| on.rounds > 1)
                    .map(|[a, b]| {
                        format!(
                            " (median of {} rounds paired with OTLP off, {:+.1}% to {:+.1}%)",
                            on.rounds,
                            a * 100.0,
                            b * 100.0
                        )
                    })
                    .unwrap_or_default();
                Some((
                    format!(
                        "CPU per event {:+.1}%{range}, achieved rate {:+.1}%",
                        cpu * 100.0,
                        -rate * 100.0
                    ),
                    cpu <= 0.05 && rate <= 0.05,
                ))
            }),
        ),
        verdict(
            "simulator alone (acking stub) >= 3x the pipeline's saturation rate",
            m.simulator_multiple.map(|x| {
                let sustained = m.simulator_sustained_multiple.unwrap_or(0.0);
                (
                    format!("{x:.1}x achieved; sustained up to {sustained:.0}x offered"),
                    sustained >= 3.0 || x >= 3.0,
                )
            }),
        ),
        verdict(
            "catch-up after a failure fault <= 2 s from its expiry (default: 30% of entries for 2 s)",
            recovery.and_then(|r| {
                let s = r.fault_catch_up_s?;
                let fault = r
                    .fault
                    .map(|[ratio, ttl]| format!(" after {} for {ttl:.0} s", percent(ratio)))
                    .unwrap_or_default();
                Some((
                    format!("{s:.2} s{fault}{}", verified(r)),
                    s <= 2.0 && r.verified == Some(true),
                ))
            }),
        ),
        verdict(
            "recovery after a worker SIGKILL <= 2 s (kill to its entries processed)",
            recovery.and_then(|r| {
                let median = r.kill_recovery_median_s?;
                let unrecovered = if r.kills_unrecovered > 0 {
                    format!(", {} not recovered", r.kills_unrecovered)
                } else {
                    String::new()
                };
                Some((
                    format!(
                        "median {median:.2} s, max {} s of {} kills{unrecovered}{}",
                        opt(r.kill_recovery_max_s, 2),
                        r.kills,
                        verified(r)
                    ),
                    median <= 2.0 && r.kills_unrecovered == 0 && r.verified == Some(true),
                ))
            }),
        ),
        verdict(
            "Redis Cluster master SIGKILL: appending at 90% of the rate again <= node timeout + 1 s; with --redis-wait-replicas 1 no acknowledged event lost",
            m.failover
                .iter()
                .find(|r| r.wait_replicas == 1.0)
                .and_then(|r| {
                    let s = r.back_to_rate_s?;
                    let verify = match r.verified {
                        Some(true) => "verify passed",
                        Some(false) => "verify FAILED",
                        None => "not verified",
                    };
                    let limit = r.node_timeout_s + 1.0;
                    let promoted = r
                        .promoted_s
                        .map(|p| format!(" (promoted {p:.2} s)"))
                        .unwrap_or_default();
                    Some((
                        format!(
                            "{s:.2} s{promoted} against {limit:.2} s (node timeout {:.2} s); {:.0} lost; {verify}",
                            r.node_timeout_s, r.lost
                        ),
                        s <= limit && r.lost == 0.0 && r.verified == Some(true),
                    ))
                }),
        ),
    ];
    let (target, measured) = crate::latency_report::verdict(&m.latency);
    out.insert(2, verdict(target, measured));
    let (target, measured) = crate::cold_report::verdict(&m.cold_start);
    out.push(verdict(target, measured));
    out.extend(
        crate::query_report::verdicts(m.query_scale.as_ref())
            .into_iter()
            .map(|(target, measured)| verdict(target, measured)),
    );
    out
}

/// How the recovery probe's verification ended, for a verdict.
fn verified(r: &RecoveryRow) -> &'static str {
    match r.verified {
        Some(true) => "; verify passed",
        Some(false) => "; verify FAILED",
        None => "; not verified",
    }
}

/// A ratio as a percentage without float noise: 0.1 is `10%`, 0.005 `0.5%`.
fn percent(ratio: f64) -> String {
    let text = format!("{:.2}", ratio * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

/// Renders the whole summary.
pub fn render(record: &Record, chart: Option<&str>, note: Option<&str>) -> String {
    let mut out = String::new();
    let m = &record.median;
    let mc = &record.machine;
    let _ = writeln!(
        out,
        "# Testbed benchmark: {} on {}\n",
        &record.started, mc.host
    );
    if record.smoke {
        let _ = writeln!(
            out,
            "> **Smoke run** (`--smoke`): every step for a few seconds at low rates to keep the harness working. The figures mean nothing and no target is judged.\n"
        );
    }
    if let Some(note) = note {
        let _ = writeln!(out, "> {note}\n");
    }
    if record.runs.len() > 1 {
        let _ = writeln!(
            out,
            "Figures are the median of {} repetitions (each repetition's ratios use its own ceiling); raw figures of every probe are in the JSON file.\n",
            record.runs.len()
        );
    }
    let _ = writeln!(out, "| machine | |\n|---|---|");
    for (k, v) in [
        ("CPU", format!("{} × {}", mc.nproc, mc.cpu_model)),
        ("memory", format!("{} MiB", mc.memory_mib)),
        ("kernel", mc.kernel.clone()),
        (
            "load average (start → end)",
            format!("{} → {}", mc.loadavg_start, mc.loadavg_end),
        ),
        ("git revision", mc.git_revision.clone()),
        (
            "testbed",
            format!("{} (`{}`)", mc.testbed_version, mc.testbed_bin),
        ),
        ("redis", mc.redis_version.clone()),
        ("wall time", format!("{:.0} s", record.wall_s)),
    ] {
        let _ = writeln!(out, "| {k} | {v} |");
    }

    let _ = writeln!(out, "\n## Targets\n");
    if record.smoke {
        let _ = writeln!(out, "Not judged in a smoke run.");
    } else {
        let _ = writeln!(out, "| target | measured | met |\n|---|---|---|");
        for v in verdicts(m) {
            let met = match v.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            let _ = writeln!(out, "| {} | {} | {met} |", v.target, v.measured);
        }
    }

    let _ = writeln!(out, "\n## Ceiling and saturation\n");
    let _ = writeln!(out, "| figure | value |\n|---|---|");
    let _ = writeln!(
        out,
        "| XADD ceiling (redis-benchmark -P 64, one event-sized entry) | {} ops/s |",
        opt(m.ceiling_xadd_per_sec, 0)
    );
    if let Some(c) = record.runs.first().and_then(|r| r.ceiling.as_ref()) {
        let _ = writeln!(
            out,
            "| entry | {} fields × {} bytes (mean encoded event {:.0} bytes) |",
            c.entry.fields, c.entry.value_bytes, c.entry.mean_encoded_bytes
        );
    }
    let _ = writeln!(
        out,
        "| highest verified sustained rate | {} events/s |",
        opt(m.saturation_rate, 0)
    );
    let _ = writeln!(
        out,
        "| ratio to the ceiling | {} |",
        m.saturation_ratio
            .map_or("–".into(), |r| format!("{:.1}%", r * 100.0))
    );
    if let Some(sat) = record.runs.first().and_then(|r| r.saturation.as_ref()) {
        let _ = writeln!(
            out,
            "\nSearch of repetition 1 (stopped by: {}):\n",
            sat.stopped_by
        );
        let _ = writeln!(
            out,
            "| offered/s | achieved/s | ack p50 ms | ack p99 ms | ack p99.9 ms | e2e p50 ms | e2e p99 ms | backlog mid → end (limit) | verified | sustained | why not |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for p in &sat.probes {
            let _ = writeln!(
                out,
                "| {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
                p.offered_rate,
                p.achieved_rate,
                p.ack_latency.p50_ms,
                p.ack_latency.p99_ms,
                p.ack_latency.p999_ms,
                opt(p.e2e.map(|e| e.p50_ms), 1),
                opt(p.e2e.map(|e| e.p99_ms), 1),
                p.backlog_end.map_or("–".into(), |b| format!(
                    "{} → {b} ({})",
                    p.backlog_mid.unwrap_or(0),
                    p.backlog_limit
                )),
                match p.verified {
                    Some(true) => "yes",
                    Some(false) if p.workers_paused => "paused",
                    Some(false) => "no",
                    None => "–",
                },
                if p.sustained { "yes" } else { "no" },
                p.reasons.join("; ").replace('|', "/"),
            );
        }
    }

    if !m.latency.is_empty() {
        let _ = writeln!(out, "\n## Latency (split processes)\n");
        let _ = writeln!(
            out,
            "| share of saturation | offered/s | achieved/s | ack p50 ms | ack p99 ms | ack p99.9 ms | e2e p50 ms | e2e p99 ms | floor ack p50 ms | floor ack p99 ms |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for l in &m.latency {
            let _ = writeln!(
                out,
                "| {:.0}% | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
                l.fraction * 100.0,
                l.offered_rate,
                l.achieved_rate,
                l.ack_p50_ms,
                l.ack_p99_ms,
                l.ack_p999_ms,
                opt(l.e2e_p50_ms, 2),
                opt(l.e2e_p99_ms, 2),
                opt(l.floor_ack_p50_ms, 2),
                opt(l.floor_ack_p99_ms, 2)
            );
        }
        let _ = writeln!(
            out,
            "\n*Floor*: the same rate, batch size and connections against the acking stub \
             (nothing validated or stored): the simulator's, gRPC's and this host's share of \
             the batch-ack latency."
        );
    }

    if m.binary_mib.is_some() {
        let _ = writeln!(out, "\n## Footprint\n");
        let _ = writeln!(out, "`testbed` binary: {} MiB.\n", opt(m.binary_mib, 1));
    }
    if !m.footprint.is_empty() {
        let _ = writeln!(
            out,
            "| process | idle RSS MiB | idle CPU (cores) | peak RSS MiB | CPU s per million events |\n|---|---|---|---|---|"
        );
        for f in &m.footprint {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {:.2} |",
                f.name,
                opt(f.idle_rss_mib, 1),
                opt(f.idle_cpu_cores, 3),
                f.peak_rss_mib,
                f.cpu_s_per_million_events
            );
        }
    }

    if !m.telemetry.is_empty() {
        let _ = writeln!(
            out,
            "\n## Telemetry cost (OTLP into a local sink that drops)\n"
        );
        let _ = writeln!(
            out,
            "| trace sampling | offered/s | achieved/s | service CPU s per million events | CPU per event vs off (rounds: median, range) | ack p99 ms | spans received |\n|---|---|---|---|---|---|---|"
        );
        for t in &m.telemetry {
            let mode = t
                .mode
                .parse::<f64>()
                .map_or_else(|_| t.mode.clone(), percent);
            let cost = match (t.cpu_cost, t.cpu_cost_range) {
                (Some(c), Some([a, b])) if t.rounds > 1 => {
                    format!(
                        "{:+.1}% ({:+.1}% to {:+.1}%)",
                        c * 100.0,
                        a * 100.0,
                        b * 100.0
                    )
                }
                (Some(c), _) => format!("{:+.1}%", c * 100.0),
                (None, _) => "–".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {:.2} | {} | {:.2} | {} |",
                mode,
                t.offered_rate,
                t.achieved_rate,
                t.service_cpu_s_per_million_events,
                cost,
                t.ack_p99_ms,
                t.spans.map_or("–".into(), |s| s.to_string())
            );
        }
    }

    if !m.topology.is_empty() {
        let _ = writeln!(out, "\n## Monolithic (`testbed all`) vs split\n");
        let _ = writeln!(
            out,
            "| share | offered/s | split achieved/s | mono achieved/s | split ack p99 ms | mono ack p99 ms | split CPU s/M ev | mono CPU s/M ev | split RSS MiB | mono RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for t in &m.topology {
            let s = t.split.map_or(
                ["–".to_owned(), "–".into(), "–".into(), "–".into()],
                |s| {
                    [
                        format!("{:.0}", s[0]),
                        format!("{:.2}", s[1]),
                        format!("{:.2}", s[2]),
                        format!("{:.1}", s[3]),
                    ]
                },
            );
            let mo = &t.monolithic;
            let _ = writeln!(
                out,
                "| {:.0}% | {:.0} | {} | {:.0} | {} | {:.2} | {} | {:.2} | {} | {:.1} |",
                t.fraction * 100.0,
                t.offered_rate,
                s[0],
                mo[0],
                s[1],
                mo[1],
                s[2],
                mo[2],
                s[3],
                mo[3]
            );
        }
    }

    if m.simulator_rate.is_some() {
        let _ = writeln!(out, "\n## Simulator alone (against an acking stub)\n");
        let _ = writeln!(
            out,
            "Highest achieved: {} events/s ({}× the saturation rate).",
            opt(m.simulator_rate, 0),
            opt(m.simulator_multiple, 1)
        );
    }
    render_recovery(&mut out, record);
    render_failover(&mut out, record);
    let query_scale: Vec<_> = record.runs.iter().map(|r| r.query_scale.as_ref()).collect();
    crate::query_report::render(&mut out, &query_scale);
    let first_cold = record.runs.iter().find_map(|r| r.cold_start.as_ref());
    crate::cold_report::render(&mut out, &m.cold_start, first_cold);
    crate::k6_report::render(&mut out, m.k6.as_ref());
    let instructions: Vec<_> = record
        .runs
        .iter()
        .map(|r| r.instructions.as_ref())
        .collect();
    crate::instructions_report::render(&mut out, &instructions, &mc.git_revision);
    if let Some(chart) = chart {
        let _ = writeln!(
            out,
            "\n## Latency against offered rate\n\n![latency percentiles against offered rate]({chart})"
        );
    }
    if !record.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for n in &record.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

/// The recovery step: one row per repetition, then the median.
fn render_recovery(out: &mut String, record: &Record) {
    let Some(m) = &record.median.recovery else {
        return;
    };
    let _ = writeln!(
        out,
        "\n## Recovery (split processes, two workers, {:.0} events/s)\n",
        m.offered_rate
    );
    let _ = writeln!(
        out,
        "| repetition | fault catch-up s | kills | entries stranded per kill | taken over s (per kill) | recovered s (per kill) | verified |\n|---|---|---|---|---|---|---|"
    );
    let list = |v: Vec<Option<f64>>| v.iter().map(|x| opt(*x, 2)).collect::<Vec<_>>().join(", ");
    for (i, r) in record.runs.iter().enumerate() {
        let Some(r) = &r.recovery else { continue };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            opt(r.fault.as_ref().and_then(|f| f.catch_up_s), 2),
            r.kills.len(),
            r.kills
                .iter()
                .map(|k| k.stranded_entries.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            list(r.kills.iter().map(|k| k.taken_over_s).collect()),
            list(r.kills.iter().map(|k| k.recovered_s).collect()),
            match r.probe.verified {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            },
        );
    }
    let reps = record.runs.iter().filter(|r| r.recovery.is_some()).count();
    let (of, per) = if reps > 1 {
        (
            format!("Medians of the {reps} repetitions"),
            " (each repetition's median and max of its kills)",
        )
    } else {
        ("Figures".to_owned(), "")
    };
    let _ = writeln!(
        out,
        "\n{of}: fault catch-up {} s; kill recovery median {} s, max {} s{per}; taken over: median {} s.",
        opt(m.fault_catch_up_s, 2),
        opt(m.kill_recovery_median_s, 2),
        opt(m.kill_recovery_max_s, 2),
        opt(m.kill_taken_over_median_s, 2),
    );
    let mut all: Vec<f64> = record
        .runs
        .iter()
        .filter_map(|r| r.recovery.as_ref())
        .flat_map(|r| r.kills.iter().filter_map(|k| k.recovered_s))
        .collect();
    if reps > 1 && !all.is_empty() {
        let n = all.len();
        let largest = all.iter().copied().fold(f64::MIN, f64::max);
        let median = crate::results::median(&mut all).unwrap_or(0.0);
        let _ = writeln!(
            out,
            "Over all {n} kills recovered: median {median:.2} s, largest {largest:.2} s."
        );
    }
    let _ = writeln!(
        out,
        "\n*Fault catch-up*: from the fault's expiry until every entry appended before it is \
         acknowledged (none pending, none unread). *Recovered*: from the SIGKILL until none of \
         the entries the worker held is pending any more (taken over by the other worker, \
         processed, acknowledged). See bench/README.md, \"Recovery\"."
    );
    let notes: Vec<&String> = record
        .runs
        .iter()
        .filter_map(|r| r.recovery.as_ref())
        .flat_map(|r| &r.notes)
        .collect();
    for n in notes {
        let _ = writeln!(out, "- {n}");
    }
}

/// The failover step: one row per repetition and setting, then what
/// waiting for a replica cost.
fn render_failover(out: &mut String, record: &Record) {
    if record.median.failover.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Redis Cluster failover (3 masters + 3 replicas, node timeout {} s, split processes, {:.0} events/s)\n",
        record.median.failover[0].node_timeout_s, record.median.failover[0].offered_rate
    );
    let _ = writeln!(
        out,
        "| repetition | --redis-wait-replicas | steady events/s | steady ack p50 ms | steady ack p99 ms | promoted s | cluster ok s | rejoined s | back to 90% rate s | longest publishing gap s | acknowledged | lost | verified |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (i, r) in record.runs.iter().enumerate() {
        let Some(f) = &r.failover else { continue };
        for run in &f.runs {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} |",
                i + 1,
                run.wait_replicas,
                run.steady.achieved_rate,
                run.steady.ack_latency.p50_ms,
                run.steady.ack_latency.p99_ms,
                opt(run.promoted_s, 2),
                opt(run.cluster_ok_s, 2),
                opt(run.rejoined_s, 2),
                opt(run.back_to_rate_s, 2),
                opt(run.longest_gap_s, 2),
                run.acknowledged,
                run.lost,
                match run.failover.verified {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "–",
                },
            );
        }
    }
    let by = |n: f64| record.median.failover.iter().find(|r| r.wait_replicas == n);
    if let (Some(zero), Some(one)) = (by(0.0), by(1.0)) {
        let _ = writeln!(
            out,
            "\nThe cost of waiting for one replica (steady probes, medians): ack p50 {:.2} ms against {:.2} ms, p99 {:.2} ms against {:.2} ms; achieved {:.0} against {:.0} events/s.",
            one.steady_ack_p50_ms,
            zero.steady_ack_p50_ms,
            one.steady_ack_p99_ms,
            zero.steady_ack_p99_ms,
            one.steady_rate,
            zero.steady_rate,
        );
    }
    let _ = writeln!(
        out,
        "\n*Back to 90% rate*: from the SIGKILL until events are appended at 90% of the offered \
         rate over a 500 ms window. *Longest publishing gap*: the simulator's longest time \
         without an accepted batch (its report's `longest_gap_s`). *Lost*: acknowledged to the simulator and never processed \
         (with 0 replicas waited for, what a master's death can take with it). See \
         bench/README.md, \"Failover\"."
    );
    for n in record
        .runs
        .iter()
        .filter_map(|r| r.failover.as_ref())
        .flat_map(|f| f.runs.iter().flat_map(|r| &r.notes))
    {
        let _ = writeln!(out, "- {n}");
    }
}

#[cfg(test)]
mod tests;
