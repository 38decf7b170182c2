//! The report's tests: verdicts and rendered sections.

use super::*;
use crate::results::{FootprintRow, LatencyRow, TelemetryRow};

/// A record of `runs`: each summarized, and their median.
fn record_of(runs: Vec<crate::results::RunResult>) -> Record {
    let summaries: Vec<Summary> = runs
        .iter()
        .map(|r| crate::summary::summarize(r, None))
        .collect();
    Record {
        schema: 1,
        started: "2026-12-07T00:00:00Z".into(),
        wall_s: 1.0,
        smoke: false,
        command: Vec::new(),
        settings: serde_json::Value::Null,
        machine: Default::default(),
        median: crate::results::median_summary(&summaries),
        runs,
        summaries,
        notes: Vec::new(),
    }
}

/// Sampling ratios print as clean percentages.
#[test]
fn percentages() {
    assert_eq!(percent(0.1), "10%");
    assert_eq!(percent(1.0), "100%");
    assert_eq!(percent(0.005), "0.5%");
}

/// Each target is judged on its own figure; missing figures are "not measured".
#[test]
fn judges_targets() {
    let m = Summary {
        saturation_rate: Some(200_000.0),
        saturation_ratio: Some(0.4),
        latency: vec![LatencyRow {
            fraction: 0.5,
            ack_p99_ms: 4.0,
            offered_rate: 1000.0,
            floor_ack_p99_ms: Some(1.25),
            ..Default::default()
        }],
        footprint: vec![
            FootprintRow {
                name: "ingest".into(),
                idle_rss_mib: Some(12.0),
                peak_rss_mib: 60.0,
                ..Default::default()
            },
            FootprintRow {
                name: "redis".into(),
                idle_rss_mib: Some(500.0),
                peak_rss_mib: 900.0,
                ..Default::default()
            },
        ],
        telemetry: vec![
            TelemetryRow {
                mode: "off".into(),
                achieved_rate: 1000.0,
                service_cpu_s_per_million_events: 10.0,
                ..Default::default()
            },
            TelemetryRow {
                mode: "0.1".into(),
                achieved_rate: 990.0,
                service_cpu_s_per_million_events: 10.4,
                cpu_cost: Some(0.04),
                cpu_cost_range: Some([-0.02, 0.07]),
                rounds: 3,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let v = verdicts(&m);
    let met: Vec<Option<bool>> = v.iter().map(|v| v.met).collect();
    assert_eq!(
        met,
        vec![
            Some(false),
            Some(true),
            // End-to-end latency: no level has an end-to-end figure.
            None,
            Some(true),
            Some(true),
            Some(true),
            None,
            None,
            None,
            // Cold start.
            None,
            // The query-scale step's four.
            None,
            None,
            None,
            None,
            None
        ]
    );
    assert_eq!(v[0].measured, "40.0% (200000 events/s)");
    assert_eq!(
        v[1].measured,
        "4.00 ms at 1000 events/s (simulator and gRPC alone, against the stub: 1.25 ms)"
    );
    assert!(v[2].target.starts_with("end-to-end p99"), "{}", v[2].target);
    assert_eq!(v[3].measured, "largest 12.0 MiB (ingest)");
    assert_eq!(
        v[5].measured,
        "CPU per event +4.0% (median of 3 rounds paired with OTLP off, -2.0% to +7.0%), achieved rate -1.0%"
    );
}

/// The recovery targets: met at or under 2 s with verification passed;
/// a kill not recovered, or a failed verification, misses them.
#[test]
fn judges_recovery() {
    let row = RecoveryRow {
        fault: Some([0.3, 2.0]),
        fault_catch_up_s: Some(1.5),
        kill_recovery_median_s: Some(1.9),
        kill_recovery_max_s: Some(2.3),
        kills: 3,
        verified: Some(true),
        ..Default::default()
    };
    let judged = |row: &RecoveryRow| {
        let m = Summary {
            recovery: Some(row.clone()),
            ..Default::default()
        };
        let v = verdicts(&m);
        (v[7].clone(), v[8].clone())
    };
    let (fault, kill) = judged(&row);
    assert_eq!((fault.met, kill.met), (Some(true), Some(true)));
    assert_eq!(fault.measured, "1.50 s after 30% for 2 s; verify passed");
    assert_eq!(
        kill.measured,
        "median 1.90 s, max 2.30 s of 3 kills; verify passed"
    );
    let (fault, kill) = judged(&RecoveryRow {
        kills_unrecovered: 1,
        verified: Some(false),
        ..row.clone()
    });
    assert_eq!((fault.met, kill.met), (Some(false), Some(false)));
    assert_eq!(
        kill.measured,
        "median 1.90 s, max 2.30 s of 3 kills, 1 not recovered; verify FAILED"
    );
    let (fault, _) = judged(&RecoveryRow {
        fault_catch_up_s: Some(2.01),
        ..row
    });
    assert_eq!(fault.met, Some(false));
}

/// The recovery section lists each repetition's kills and, over
/// repetitions, the median and largest of every kill.
#[test]
fn renders_recovery_repetitions() {
    use crate::results::{FaultCatchUp, KillRecovery, ProbeResult, Recovery, RunResult};
    let run = |catch_up: f64, kills: &[f64]| RunResult {
        recovery: Some(Recovery {
            probe: ProbeResult {
                offered_rate: 2000.0,
                verified: Some(true),
                ..Default::default()
            },
            fault: Some(FaultCatchUp {
                catch_up_s: Some(catch_up),
                ..Default::default()
            }),
            kills: kills
                .iter()
                .map(|k| KillRecovery {
                    stranded_entries: 4,
                    taken_over_s: Some(*k),
                    recovered_s: Some(*k),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let record = record_of(vec![run(1.0, &[1.5, 2.5]), run(1.2, &[1.0, 3.0])]);
    let out = render(&record, None, None);
    assert!(
        out.contains("| 2 | 1.20 | 2 | 4, 4 | 1.00, 3.00 | 1.00, 3.00 | yes |"),
        "{out}"
    );
    assert!(
        out.contains("Medians of the 2 repetitions: fault catch-up 1.10 s; kill recovery median 2.00 s, max 2.75 s"),
        "{out}"
    );
    assert!(
        out.contains("Over all 4 kills recovered: median 2.00 s, largest 3.00 s."),
        "{out}"
    );
}

/// The failover section lists each repetition's settings; the median
/// summary keeps a loss and a failed verification of any repetition,
/// and the verdict judges the replica-waiting setting.
#[test]
fn renders_failovers() {
    use crate::results::{Failover, FailoverRun, ProbeResult, RunResult};
    let probe = |p99: f64, verified: bool| ProbeResult {
        achieved_rate: 2000.0,
        ack_latency: crate::sim::Latency {
            p50_ms: p99 / 4.0,
            p99_ms: p99,
            ..Default::default()
        },
        verified: Some(verified),
        ..Default::default()
    };
    let run = |lost: u64, back: f64| RunResult {
        failover: Some(Failover {
            rate: 2000.0,
            node_timeout_s: 1.0,
            runs: vec![
                FailoverRun {
                    wait_replicas: 0,
                    steady: probe(4.0, true),
                    failover: probe(9.0, lost == 0),
                    promoted_s: Some(1.5),
                    back_to_rate_s: Some(back),
                    longest_gap_s: Some(back - 0.1),
                    acknowledged: 100,
                    processed: 100 - lost,
                    lost,
                    ..Default::default()
                },
                FailoverRun {
                    wait_replicas: 1,
                    steady: probe(8.0, true),
                    failover: probe(12.0, true),
                    promoted_s: Some(1.6),
                    back_to_rate_s: Some(back),
                    acknowledged: 100,
                    processed: 100,
                    ..Default::default()
                },
            ],
        }),
        ..Default::default()
    };
    let record = record_of(vec![run(0, 1.8), run(3, 1.9), run(0, 1.7)]);
    let median = &record.median;
    assert_eq!(median.failover[0].lost, 3.0);
    assert_eq!(median.failover[0].verified, Some(false));
    assert_eq!(median.failover[1].verified, Some(true));
    let out = render(&record, None, None);
    assert!(
        out.contains(
            "| 2 | 0 | 2000 | 1.00 | 4.00 | 1.50 | – | – | 1.90 | 1.80 | 100 | 3 | **no** |"
        ),
        "{out}"
    );
    assert!(
        out.contains("ack p50 2.00 ms against 1.00 ms, p99 8.00 ms against 4.00 ms"),
        "{out}"
    );
    let judged = verdicts(&record.median);
    let failover = judged
        .iter()
        .find(|v| v.target.starts_with("Redis Cluster master SIGKILL"))
        .unwrap();
    assert_eq!(failover.met, Some(true), "{}", failover.measured);
    // Judged against the cluster's own node timeout: 1.8 s is too slow
    // with 0.5 s.
    let mut short = vec![run(0, 1.8), run(0, 1.8), run(0, 1.8)];
    for r in &mut short {
        if let Some(f) = &mut r.failover {
            f.node_timeout_s = 0.5;
        }
    }
    let judged = verdicts(&record_of(short).median);
    let failover = judged
        .iter()
        .find(|v| v.target.starts_with("Redis Cluster master SIGKILL"))
        .unwrap();
    assert_eq!(failover.met, Some(false), "{}", failover.measured);
    assert!(
        failover
            .measured
            .contains("1.80 s (promoted 1.60 s) against 1.50 s (node timeout 0.50 s)"),
        "{}",
        failover.measured
    );
}

/// A query-scale run is judged on its summary (which drops the raw call
/// times) and rendered as its own section.
#[test]
fn judges_and_renders_query_scale() {
    use crate::query_report::{FleetSize, QueryScale, figures};
    let reads = [
        "list",
        "list_arm64",
        "top_events",
        "top_gpu",
        "device_stats",
    ]
    .iter()
    .map(|name| figures(name, vec![1.0, 2.0, 3.0], &[]))
    .collect();
    let run = crate::results::RunResult {
        query_scale: Some(QueryScale {
            reads_per_size: 3,
            sizes: vec![FleetSize {
                devices: 1_000_000,
                indexed: 1_000_000,
                reads,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let record = record_of(vec![run]);
    let q = record.median.query_scale.as_ref().unwrap();
    assert!(q.sizes[0].reads.iter().all(|r| r.samples_ms.is_empty()));
    let v = verdicts(&record.median);
    let judged: Vec<Option<bool>> = v[v.len() - 4..].iter().map(|v| v.met).collect();
    assert_eq!(judged, vec![Some(true), Some(true), Some(true), None]);
    let out = render(&record, None, None);
    assert!(out.contains("## Query at fleet scale"), "{out}");
    assert!(out.contains("| 1000000 | 2.00 / 3.00 / 3.00 |"), "{out}");
}

/// Cold-start starts are summarised per role, judged as one target, and
/// rendered beside the k6 comparison.
#[test]
fn judges_and_renders_cold_start_and_k6() {
    use crate::cold_report::{ColdStart, ColdStartRole, ColdStartRun};
    use crate::k6_report::{K6Compare, LoadSide};
    let start = |ms: f64| ColdStartRun {
        connected_ms: Some(ms - 1.0),
        serving_ms: Some(ms),
        ..Default::default()
    };
    let run = crate::results::RunResult {
        cold_start: Some(ColdStart {
            runs_per_role: 3,
            poll_ms: 1.0,
            roles: vec![ColdStartRole {
                role: "worker".into(),
                store: "redis".into(),
                health_names: vec![String::new(), "testbed.v1.WorkerControlService".into()],
                runs: vec![start(9.0), start(30.0), start(12.0)],
                ..Default::default()
            }],
        }),
        k6: Some(K6Compare {
            batch: 50,
            duration_s: 20.0,
            sides: vec![LoadSide {
                name: "k6".into(),
                requests: 1000,
                cpu_s: 3.0,
                wall_s: 20.0,
                ..Default::default()
            }],
            notes: Vec::new(),
        }),
        ..Default::default()
    };
    let record = record_of(vec![run]);
    assert_eq!(record.median.cold_start[0].median_ms, Some(12.0));
    let v = verdicts(&record.median);
    let cold = v
        .iter()
        .find(|v| v.target.starts_with("cold start:"))
        .unwrap();
    assert_eq!(cold.met, Some(true), "{}", cold.measured);
    assert!(
        cold.measured.contains("slowest start 30.0 ms"),
        "{}",
        cold.measured
    );
    let out = render(&record, None, None);
    assert!(
        out.contains("| worker | redis | 3 (0) | 12.0 | 30.0 | 11.0 | – |"),
        "{out}"
    );
    assert!(out.contains("## The simulator against k6"), "{out}");
    assert!(out.contains("| 3.000 |"), "{out}");
}
