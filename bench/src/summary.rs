//! From one repetition's raw probes to its fixed-shape [`Summary`].

use crate::results::ProbeResult;
use crate::results::{
    FailoverRow, FootprintRow, LatencyRow, Level, Recovery, RecoveryRow, RunResult, Summary,
    TelemetryRow, TopologyRow,
};

const MIB: f64 = 1024.0 * 1024.0;

/// The testbed's own processes (not Redis, not the simulator).
pub fn is_service(name: &str) -> bool {
    matches!(name, "ingest" | "worker" | "query" | "all")
}

fn service_cpu(p: &ProbeResult) -> f64 {
    p.processes
        .iter()
        .filter(|f| is_service(&f.name))
        .map(|f| f.cpu_s_per_million_events)
        .sum()
}

/// One row per telemetry mode (off first, then in the order they first
/// ran): medians over the rounds, and each mode's cost against the off
/// probe of its own round.
fn telemetry_rows(probes: &[ProbeResult]) -> Vec<TelemetryRow> {
    let mut modes: Vec<Option<f64>> = Vec::new();
    for p in probes {
        if !modes.contains(&p.sampling) {
            modes.push(p.sampling);
        }
    }
    modes.sort_by_key(Option::is_some);
    let round = |p: &ProbeResult| p.round.unwrap_or(1);
    let off_cpu = |r: u32| {
        probes
            .iter()
            .find(|p| p.sampling.is_none() && round(p) == r)
            .map(service_cpu)
            .filter(|c| *c > 0.0)
    };
    let median = |mut v: Vec<f64>| crate::results::median(&mut v).unwrap_or(0.0);
    modes
        .into_iter()
        .map(|mode| {
            let of_mode: Vec<&ProbeResult> = probes.iter().filter(|p| p.sampling == mode).collect();
            let mut costs: Vec<f64> = if mode.is_none() {
                Vec::new()
            } else {
                of_mode
                    .iter()
                    .filter_map(|p| off_cpu(round(p)).map(|off| service_cpu(p) / off - 1.0))
                    .collect()
            };
            costs.sort_by(f64::total_cmp);
            TelemetryRow {
                mode: mode.map_or_else(|| "off".to_owned(), |x| x.to_string()),
                offered_rate: median(of_mode.iter().map(|p| p.offered_rate).collect()),
                achieved_rate: median(of_mode.iter().map(|p| p.achieved_rate).collect()),
                service_cpu_s_per_million_events: median(
                    of_mode.iter().map(|p| service_cpu(p)).collect(),
                ),
                ack_p99_ms: median(of_mode.iter().map(|p| p.ack_latency.p99_ms).collect()),
                spans: of_mode.iter().any(|p| p.otlp.is_some()).then(|| {
                    median(
                        of_mode
                            .iter()
                            .filter_map(|p| p.otlp.map(|o| o.spans as f64))
                            .collect(),
                    )
                    .round() as u64
                }),
                cpu_cost: crate::results::median(&mut costs.clone()),
                cpu_cost_range: costs.first().zip(costs.last()).map(|(a, b)| [*a, *b]),
                rounds: of_mode.len() as u32,
            }
        })
        .collect()
}

fn service_peak_mib(p: &ProbeResult) -> f64 {
    p.processes
        .iter()
        .filter(|f| is_service(&f.name))
        .map(|f| f.peak_rss_bytes as f64 / MIB)
        .sum()
}

fn topology_figures(p: &ProbeResult) -> [f64; 4] {
    [
        p.achieved_rate,
        p.ack_latency.p99_ms,
        service_cpu(p),
        service_peak_mib(p),
    ]
}

fn latency_row(l: &Level, floor: Option<&Level>) -> LatencyRow {
    let p = &l.probe;
    LatencyRow {
        floor_ack_p50_ms: floor.map(|f| f.probe.ack_latency.p50_ms),
        floor_ack_p99_ms: floor.map(|f| f.probe.ack_latency.p99_ms),
        fraction: l.fraction,
        offered_rate: p.offered_rate,
        achieved_rate: p.achieved_rate,
        ack_p50_ms: p.ack_latency.p50_ms,
        ack_p99_ms: p.ack_latency.p99_ms,
        ack_p999_ms: p.ack_latency.p999_ms,
        e2e_p50_ms: p.e2e.map(|e| e.p50_ms),
        e2e_p99_ms: p.e2e.map(|e| e.p99_ms),
        sustained: p.sustained,
    }
}

/// The recovery step's figures: the kills' recovery times by median and
/// maximum (a kill not recovered within the timeout counts in neither,
/// and is counted apart).
fn recovery_row(r: &Recovery) -> RecoveryRow {
    let mut recovered: Vec<f64> = r.kills.iter().filter_map(|k| k.recovered_s).collect();
    let mut taken: Vec<f64> = r.kills.iter().filter_map(|k| k.taken_over_s).collect();
    let mut stranded: Vec<f64> = r.kills.iter().map(|k| k.stranded_entries as f64).collect();
    RecoveryRow {
        offered_rate: r.probe.offered_rate,
        fault: r.fault.as_ref().map(|f| [f.ratio, f.ttl_s]),
        fault_catch_up_s: r.fault.as_ref().and_then(|f| f.catch_up_s),
        kill_recovery_max_s: recovered.iter().copied().max_by(f64::total_cmp),
        kill_recovery_median_s: crate::results::median(&mut recovered),
        kill_taken_over_median_s: crate::results::median(&mut taken),
        kills: r.kills.len() as u32,
        kills_unrecovered: r.kills.iter().filter(|k| k.recovered_s.is_none()).count() as u32,
        stranded_median: crate::results::median(&mut stranded),
        verified: r.probe.verified,
    }
}

/// Summarises a repetition; `binary_bytes` is the size of `testbed`.
pub fn summarize(r: &RunResult, binary_bytes: Option<u64>) -> Summary {
    let saturation_rate = r.saturation.as_ref().and_then(|s| s.sustained_rate);
    let mut s = Summary {
        ceiling_xadd_per_sec: r.ceiling.as_ref().map(|c| c.xadd_per_sec),
        saturation_rate,
        saturation_ratio: r.saturation.as_ref().and_then(|s| s.ratio_to_ceiling),
        binary_mib: binary_bytes
            .filter(|_| r.footprint.is_some())
            .map(|b| b as f64 / MIB),
        ..Default::default()
    };
    if let Some(levels) = &r.latency {
        let floor = |fraction: f64| {
            r.latency_floor
                .iter()
                .flatten()
                .find(|f| (f.fraction - fraction).abs() < 1e-9)
        };
        s.latency = levels
            .iter()
            .map(|l| latency_row(l, floor(l.fraction)))
            .collect();
    }
    if let Some(fp) = &r.footprint {
        s.footprint = fp
            .probe
            .processes
            .iter()
            .map(|f| FootprintRow {
                name: f.name.clone(),
                idle_rss_mib: f.idle_rss_bytes.map(|b| b as f64 / MIB),
                idle_cpu_cores: f.idle_cpu_cores,
                peak_rss_mib: f.peak_rss_bytes as f64 / MIB,
                cpu_s_per_million_events: f.cpu_s_per_million_events,
            })
            .collect();
    }
    if let Some(probes) = &r.telemetry {
        s.telemetry = telemetry_rows(probes);
    }
    if let Some(mono) = &r.monolithic {
        let split_at = |f: f64| {
            r.latency
                .iter()
                .chain(r.split_extra.iter())
                .flatten()
                .find(|l| (l.fraction - f).abs() < 1e-9)
                .map(|l| topology_figures(&l.probe))
        };
        s.topology = mono
            .iter()
            .map(|m| TopologyRow {
                fraction: m.fraction,
                offered_rate: m.probe.offered_rate,
                split: split_at(m.fraction),
                monolithic: topology_figures(&m.probe),
            })
            .collect();
    }
    if let Some(stub) = &r.simulator {
        s.simulator_rate = stub
            .iter()
            .map(|l| l.probe.achieved_rate)
            .max_by(f64::total_cmp);
        if let (Some(sim), Some(sat)) = (s.simulator_rate, r.reference_rate) {
            s.simulator_multiple = Some(sim / sat);
        }
        s.simulator_sustained_multiple = stub
            .iter()
            .filter(|l| l.probe.sustained)
            .map(|l| l.fraction)
            .max_by(f64::total_cmp);
    }
    s.recovery = r.recovery.as_ref().map(recovery_row);
    s.cold_start = r
        .cold_start
        .as_ref()
        .map(crate::cold_report::rows)
        .unwrap_or_default();
    s.k6 = r.k6.clone();
    s.query_scale = r
        .query_scale
        .as_ref()
        .map(crate::query_report::without_samples);
    if let Some(f) = &r.failover {
        s.failover = f
            .runs
            .iter()
            .map(|run| FailoverRow {
                wait_replicas: f64::from(run.wait_replicas),
                offered_rate: f.rate,
                node_timeout_s: f.node_timeout_s,
                steady_rate: run.steady.achieved_rate,
                steady_ack_p99_ms: run.steady.ack_latency.p99_ms,
                steady_ack_p50_ms: run.steady.ack_latency.p50_ms,
                promoted_s: run.promoted_s,
                back_to_rate_s: run.back_to_rate_s,
                lost: run.lost as f64,
                verified: run.failover.verified,
            })
            .collect();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Saturation;
    use crate::results::{FaultCatchUp, Footprint, KillRecovery};
    use crate::sim::Latency;

    fn probe(rate: f64, cpu: [f64; 3]) -> ProbeResult {
        ProbeResult {
            offered_rate: rate,
            achieved_rate: rate,
            processes: ["ingest", "worker", "redis"]
                .iter()
                .zip(cpu)
                .map(|(n, c)| Footprint {
                    name: (*n).into(),
                    cpu_s_per_million_events: c,
                    peak_rss_bytes: 10 << 20,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Each mode's cost is paired with the off probe of its own round, so
    /// a round that ran slow as a whole costs nothing; rows are medians.
    #[test]
    fn telemetry_cost_pairs_rounds() {
        let at = |sampling: Option<f64>, round: u32, cpu: f64| ProbeResult {
            sampling,
            round: Some(round),
            ..probe(1000.0, [cpu, 0.0, 50.0])
        };
        let rows = telemetry_rows(&[
            at(None, 1, 10.0),
            at(Some(0.1), 1, 11.0),
            at(Some(0.1), 2, 12.5),
            at(None, 2, 12.0),
            at(None, 3, 8.0),
            at(Some(0.1), 3, 7.9),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].mode, "off");
        assert_eq!(rows[0].cpu_cost, None);
        assert_eq!(rows[0].service_cpu_s_per_million_events, 10.0);
        assert_eq!(rows[1].mode, "0.1");
        assert_eq!(rows[1].rounds, 3);
        assert_eq!(rows[1].service_cpu_s_per_million_events, 11.0);
        // Rounds: +10%, +4.2%, -1.25%: the median is +4.2%, where the
        // medians of the modes (11 against 10) would say +10%.
        let cost = rows[1].cpu_cost.unwrap();
        assert!((cost - 0.5 / 12.0).abs() < 1e-9, "{cost}");
        let [low, high] = rows[1].cpu_cost_range.unwrap();
        assert!((low + 0.0125).abs() < 1e-9 && (high - 0.1).abs() < 1e-9);
    }

    /// Service CPU leaves Redis out; split figures come from the latency
    /// step at the same fraction; the simulator multiple uses the
    /// reference rate.
    #[test]
    fn summarises_a_repetition() {
        let r = RunResult {
            footprint: Some(Level::default()),
            saturation: Some(Saturation {
                sustained_rate: Some(1000.0),
                ratio_to_ceiling: Some(0.25),
                ..Default::default()
            }),
            reference_rate: Some(1000.0),
            latency: Some(vec![Level {
                fraction: 0.5,
                probe: probe(500.0, [1.0, 2.0, 4.0]),
            }]),
            latency_floor: Some(vec![Level {
                fraction: 0.5,
                probe: ProbeResult {
                    ack_latency: Latency {
                        p50_ms: 0.5,
                        p99_ms: 1.5,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            }]),
            telemetry: Some(vec![probe(1000.0, [1.0, 1.0, 9.0])]),
            monolithic: Some(vec![Level {
                fraction: 0.5,
                probe: probe(500.0, [2.0, 0.0, 0.0]),
            }]),
            simulator: Some(vec![
                Level {
                    fraction: 3.0,
                    probe: ProbeResult {
                        sustained: true,
                        ..probe(3000.0, [0.0; 3])
                    },
                },
                Level {
                    fraction: 6.0,
                    probe: ProbeResult {
                        achieved_rate: 4500.0,
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        };
        let s = summarize(&r, Some(20 << 20));
        assert_eq!(s.saturation_ratio, Some(0.25));
        assert_eq!(s.binary_mib, Some(20.0));
        assert_eq!(s.telemetry[0].service_cpu_s_per_million_events, 2.0);
        assert_eq!(s.telemetry[0].mode, "off");
        assert_eq!(s.topology[0].split, Some([500.0, 0.0, 3.0, 20.0]));
        assert_eq!(s.topology[0].monolithic[2], 2.0);
        assert_eq!(s.simulator_rate, Some(4500.0));
        assert_eq!(s.simulator_multiple, Some(4.5));
        assert_eq!(s.simulator_sustained_multiple, Some(3.0));
        let half = &s.latency[0];
        assert_eq!(
            (half.floor_ack_p50_ms, half.floor_ack_p99_ms),
            (Some(0.5), Some(1.5))
        );
    }

    /// Kills are summarised by median and maximum of those that
    /// recovered; one that did not is counted apart, not as a time.
    #[test]
    fn summarises_recovery() {
        let kill = |recovered: Option<f64>, stranded| KillRecovery {
            consumer: "w".into(),
            stranded_entries: stranded,
            taken_over_s: recovered.map(|r| r - 0.5),
            recovered_s: recovered,
        };
        let r = RunResult {
            recovery: Some(Recovery {
                probe: ProbeResult {
                    offered_rate: 2000.0,
                    verified: Some(true),
                    ..Default::default()
                },
                fault: Some(FaultCatchUp {
                    catch_up_s: Some(1.25),
                    ..Default::default()
                }),
                kills: vec![
                    kill(Some(1.5), 10),
                    kill(Some(2.5), 30),
                    kill(None, 20),
                    kill(Some(1.75), 40),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let row = summarize(&r, None).recovery.unwrap();
        assert_eq!(row.fault_catch_up_s, Some(1.25));
        assert_eq!(row.kill_recovery_median_s, Some(1.75));
        assert_eq!(row.kill_recovery_max_s, Some(2.5));
        assert_eq!(row.kill_taken_over_median_s, Some(1.25));
        assert_eq!((row.kills, row.kills_unrecovered), (4, 1));
        assert_eq!(row.stranded_median, Some(25.0));
        assert_eq!(row.verified, Some(true));
    }
}
