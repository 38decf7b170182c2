//! What a harness run records: every step's raw figures per repetition, a
//! fixed-shape summary of each repetition, and the element-wise median of
//! those summaries (the figures the Markdown judges).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ceiling::Ceiling;
use crate::cold_report::{ColdStart, ColdStartRow};
use crate::k6_report::K6Compare;
use crate::machine::Machine;
use crate::query_report::QueryScale;
use crate::sim::Latency;
use crate::telemetry::SinkCounts;

/// Footprint of one process during a probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Footprint {
    /// `ingest`, `worker`, `query`, `all`, `redis`, `stub` or `sim`.
    pub name: String,
    /// RSS after the idle period, bytes (footprint probes only).
    pub idle_rss_bytes: Option<u64>,
    /// CPU share of one core while idle (footprint probes only).
    pub idle_cpu_cores: Option<f64>,
    /// Largest RSS seen, bytes (VmHWM at the end).
    pub peak_rss_bytes: u64,
    /// CPU seconds from the start of the load to the end of the run
    /// (verification included: the worker's work for these events).
    pub load_cpu_seconds: f64,
    /// CPU seconds per million accepted events.
    pub cpu_s_per_million_events: f64,
}

/// End-to-end figures of `GetPipelineStats`, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct E2e {
    /// Median append-to-applied time.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// The figures of one probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Its label.
    pub label: String,
    /// What was driven: `split`, `monolithic` or `stub`.
    pub target: String,
    /// OTLP sampling ratio; none: OTLP off.
    pub sampling: Option<f64>,
    /// The telemetry step's round this probe belongs to (from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// Offered events/s.
    pub offered_rate: f64,
    /// Accepted events per second of the schedule.
    pub achieved_rate: f64,
    /// Events sent.
    pub sent: u64,
    /// Events accepted.
    pub accepted: u64,
    /// Events given up.
    pub failed: u64,
    /// Batches re-sent (refused or failed first).
    pub retried_batches: u64,
    /// Batch outcomes by status code.
    pub status_codes: BTreeMap<String, u64>,
    /// Batch-ack latency from the intended send time.
    pub ack_latency: Latency,
    /// Append-to-applied latency from the query service.
    pub e2e: Option<E2e>,
    /// `--verify` passed (none: not verified).
    pub verified: Option<bool>,
    /// What verification found wrong.
    pub verify_diff: Vec<String>,
    /// Backlog (events) at the end of the schedule.
    pub backlog_end: Option<u64>,
    /// Backlog (events) half-way through the schedule.
    pub backlog_mid: Option<u64>,
    /// The harness paused the workers once the backlog check had failed,
    /// so verification reported at once (its failure is then expected).
    pub workers_paused: bool,
    /// Largest backlog seen during the schedule.
    pub backlog_max: Option<u64>,
    /// The largest backlog that still sustains.
    pub backlog_limit: u64,
    /// Whether the rate was sustained.
    pub sustained: bool,
    /// Why not.
    pub reasons: Vec<String>,
    /// Per process.
    pub processes: Vec<Footprint>,
    /// Spans, points and records received by the sink.
    pub otlp: Option<SinkCounts>,
    /// Services that did not exit 0 on SIGTERM.
    pub unclean_shutdown: Vec<String>,
    /// Wall time of the probe, s.
    pub wall_s: f64,
}

/// The saturation search of one repetition.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Saturation {
    /// Highest sustained offered rate, events/s.
    pub sustained_rate: Option<f64>,
    /// Lowest failed rate above it.
    pub failed_rate: Option<f64>,
    /// Sustained rate / XADD ceiling of the same repetition.
    pub ratio_to_ceiling: Option<f64>,
    /// Why the search stopped: `precision`, `max-probes`, `budget`, `max-rate`
    /// or `floor`.
    pub stopped_by: String,
    /// Every probe, in order.
    pub probes: Vec<ProbeResult>,
}

/// One rate of a step run at a fraction of the saturation rate.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Level {
    /// Fraction of the sustained rate.
    pub fraction: f64,
    /// The probe.
    pub probe: ProbeResult,
}

/// The recovery step's fault: how long the pipeline took to catch up
/// after a failure fault expired.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FaultCatchUp {
    /// Share of the entries the fault failed.
    pub ratio: f64,
    /// How long it lasted, s.
    pub ttl_s: f64,
    /// Seconds from its expiry until every entry appended before the
    /// expiry was acknowledged (none pending, none left unread); none: not
    /// within the recovery timeout.
    pub catch_up_s: Option<f64>,
    /// Entries pending (read, not acknowledged) at the expiry, all
    /// partitions.
    pub pending_at_expiry: u64,
    /// Events appended and not yet processed or dead-lettered at the
    /// expiry.
    pub backlog_at_expiry: u64,
    /// Events the workers retried because of the fault
    /// (`worker_events_retried_total{reason="injected_fault"}`).
    pub events_retried: u64,
}

/// One worker SIGKILLed while it held entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KillRecovery {
    /// Its consumer name.
    pub consumer: String,
    /// Entries it held (read, not acknowledged) when it died.
    pub stranded_entries: u64,
    /// Seconds from the SIGKILL until it held none (claimed by the other
    /// worker); none: not within the recovery timeout.
    pub taken_over_s: Option<f64>,
    /// Seconds from the SIGKILL until none of those entries was pending
    /// any more (processed, or dead-lettered, and acknowledged); none: not
    /// within the recovery timeout.
    pub recovered_s: Option<f64>,
}

/// The recovery step of one repetition: one probe (split processes, two
/// workers) during which a failure fault and then SIGKILLs were dealt.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Recovery {
    /// The probe: the simulator's run and its verification.
    pub probe: ProbeResult,
    /// The failure fault's catch-up (none: it could not be measured).
    pub fault: Option<FaultCatchUp>,
    /// Each SIGKILL, in order.
    pub kills: Vec<KillRecovery>,
    /// Workers killed that held nothing by the moment they died (acked
    /// between the look and the kill): tried again, not counted.
    pub missed_kills: u32,
    /// Entries the surviving worker took over from dead consumers
    /// (`worker_entries_taken_over_total`).
    pub entries_taken_over: Option<u64>,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

/// One `--redis-wait-replicas` setting of the failover step: a steady
/// probe (its cost) and a probe during which a master was SIGKILLed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FailoverRun {
    /// `--redis-wait-replicas` of ingest.
    pub wait_replicas: u32,
    /// The same load with no fault: what the setting costs.
    pub steady: ProbeResult,
    /// The load during which a master was SIGKILLed.
    pub failover: ProbeResult,
    /// Seconds from the SIGKILL until the master's replica was a master.
    pub promoted_s: Option<f64>,
    /// Seconds from the SIGKILL until every live node said
    /// `cluster_state:ok`.
    pub cluster_ok_s: Option<f64>,
    /// Seconds from the SIGKILL until the killed node, restarted on its
    /// data, was in sync as the new master's replica.
    #[serde(default)]
    pub rejoined_s: Option<f64>,
    /// Seconds from the SIGKILL until events were appended at 90% of the
    /// offered rate again (over a 500 ms window); none: not within the run.
    pub back_to_rate_s: Option<f64>,
    /// The simulator's longest time without an accepted batch (its
    /// report's `longest_gap_s`): the publishing gap the failover caused.
    #[serde(default)]
    pub longest_gap_s: Option<f64>,
    /// Events acknowledged to the simulator as accepted.
    pub acknowledged: u64,
    /// Of those, processed by the pipeline (GetRunStats).
    pub processed: u64,
    /// Acknowledged and not processed: lost with the dead master (what
    /// README's guarantees say `--redis-wait-replicas 0` may lose).
    pub lost: u64,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

/// The failover step of one repetition (see [`crate::failover`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Failover {
    /// Offered events/s.
    pub rate: f64,
    /// The cluster's `--cluster-node-timeout`, s (results before the
    /// flag existed ran with 1 s).
    #[serde(default = "one_second")]
    pub node_timeout_s: f64,
    /// One per `--redis-wait-replicas` setting.
    pub runs: Vec<FailoverRun>,
}

/// Everything one repetition measured; a step not run is `None`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// XADD ceiling.
    pub ceiling: Option<Ceiling>,
    /// Saturation search.
    pub saturation: Option<Saturation>,
    /// The saturation rate the dependent steps used (searched or given).
    pub reference_rate: Option<f64>,
    /// Latency at fractions of saturation (split topology).
    pub latency: Option<Vec<Level>>,
    /// The latency step's rates against the acking stub: what the load
    /// generator and gRPC alone cost on this host, the floor under the
    /// pipeline's batch-ack latency.
    #[serde(default)]
    pub latency_floor: Option<Vec<Level>>,
    /// The footprint probe (idle, then loaded).
    pub footprint: Option<Level>,
    /// One probe per telemetry mode and round, in the order they ran
    /// (each has its `round`).
    pub telemetry: Option<Vec<ProbeResult>>,
    /// Monolithic probes at fractions of saturation.
    pub monolithic: Option<Vec<Level>>,
    /// Split probes for the monolithic comparison not already run by the
    /// latency step.
    pub split_extra: Option<Vec<Level>>,
    /// The simulator against the stub, at multiples of saturation.
    pub simulator: Option<Vec<Level>>,
    /// Recovery from a failure fault and from SIGKILLed workers.
    #[serde(default)]
    pub recovery: Option<Recovery>,
    /// Redis Cluster failover with and without replica waits.
    #[serde(default)]
    pub failover: Option<Failover>,
    /// Query reads at fleet sizes, and the write path under a polling client.
    #[serde(default)]
    pub query_scale: Option<QueryScale>,
    /// Spawn to SERVING of each role, every start.
    #[serde(default)]
    pub cold_start: Option<ColdStart>,
    /// The simulator against k6 on the acking stub.
    #[serde(default)]
    pub k6: Option<K6Compare>,
    /// Instructions per event of ingest and worker under callgrind.
    #[serde(default)]
    pub instructions: Option<crate::instructions_report::Instructions>,
    /// Wall time of the repetition, s.
    pub wall_s: f64,
}

/// One latency level, summarised.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyRow {
    /// Fraction of saturation.
    pub fraction: f64,
    /// Offered events/s.
    pub offered_rate: f64,
    /// Achieved events/s.
    pub achieved_rate: f64,
    /// Batch-ack percentiles, ms.
    pub ack_p50_ms: f64,
    /// p99.
    pub ack_p99_ms: f64,
    /// p99.9.
    pub ack_p999_ms: f64,
    /// End-to-end p50 from GetPipelineStats, ms.
    pub e2e_p50_ms: Option<f64>,
    /// End-to-end p99.
    pub e2e_p99_ms: Option<f64>,
    /// Sustained.
    pub sustained: bool,
    /// Batch-ack p50 at the same rate against the acking stub (nothing
    /// validated or stored), ms.
    #[serde(default)]
    pub floor_ack_p50_ms: Option<f64>,
    /// Its p99, ms.
    #[serde(default)]
    pub floor_ack_p99_ms: Option<f64>,
}

/// One process's footprint, summarised.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FootprintRow {
    /// Process.
    pub name: String,
    /// Idle RSS, MiB.
    pub idle_rss_mib: Option<f64>,
    /// Idle CPU, share of a core.
    pub idle_cpu_cores: Option<f64>,
    /// Peak RSS under load, MiB.
    pub peak_rss_mib: f64,
    /// CPU seconds per million events.
    pub cpu_s_per_million_events: f64,
}

/// One telemetry mode, summarised.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TelemetryRow {
    /// `off`, or the sampling ratio.
    pub mode: String,
    /// Offered events/s.
    pub offered_rate: f64,
    /// Achieved events/s.
    pub achieved_rate: f64,
    /// CPU seconds per million events, testbed services summed (median
    /// of the rounds).
    pub service_cpu_s_per_million_events: f64,
    /// Batch-ack p99, ms.
    pub ack_p99_ms: f64,
    /// Spans the sink received.
    pub spans: Option<u64>,
    /// The cost against OTLP off: this mode's service CPU per event over
    /// the off probe's of the same round, minus one (0.05 is 5% more),
    /// the median of the rounds; none for `off` itself.
    #[serde(default)]
    pub cpu_cost: Option<f64>,
    /// The smallest and largest of the rounds' costs.
    #[serde(default)]
    pub cpu_cost_range: Option<[f64; 2]>,
    /// Rounds measured.
    #[serde(default)]
    pub rounds: u32,
}

/// One rate of the monolithic comparison.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TopologyRow {
    /// Fraction of saturation.
    pub fraction: f64,
    /// Offered events/s.
    pub offered_rate: f64,
    /// Split: achieved events/s, ack p99 ms, CPU s per M events, peak RSS MiB (all processes but Redis).
    pub split: Option<[f64; 4]>,
    /// Monolithic: the same figures.
    pub monolithic: [f64; 4],
}

/// The recovery step, summarised.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RecoveryRow {
    /// Offered events/s during the probe.
    pub offered_rate: f64,
    /// The failure fault: share of the entries failed, and for how long
    /// (s).
    pub fault: Option<[f64; 2]>,
    /// Catch-up after the failure fault's expiry, s.
    pub fault_catch_up_s: Option<f64>,
    /// Median of the kills' recovery times, s.
    pub kill_recovery_median_s: Option<f64>,
    /// Largest of them, s.
    pub kill_recovery_max_s: Option<f64>,
    /// Median of the kills' take-over times (the dead worker's entries
    /// claimed), s.
    pub kill_taken_over_median_s: Option<f64>,
    /// Kills measured.
    pub kills: u32,
    /// Kills whose entries were not all processed within the timeout.
    pub kills_unrecovered: u32,
    /// Median of the entries stranded per kill.
    pub stranded_median: Option<f64>,
    /// `--verify` passed: every accepted event processed exactly once (in
    /// the median summary: in every repetition).
    pub verified: Option<bool>,
}

/// The node timeout of results recorded before it was a flag.
fn one_second() -> f64 {
    1.0
}

/// One `--redis-wait-replicas` setting of the failover step, summarised.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FailoverRow {
    /// `--redis-wait-replicas`.
    pub wait_replicas: f64,
    /// Offered events/s.
    pub offered_rate: f64,
    /// The cluster's `--cluster-node-timeout`, s.
    #[serde(default = "one_second")]
    pub node_timeout_s: f64,
    /// Steady probe: achieved events/s.
    pub steady_rate: f64,
    /// Steady probe: batch-ack p99, ms.
    pub steady_ack_p99_ms: f64,
    /// Steady probe: batch-ack p50, ms.
    pub steady_ack_p50_ms: f64,
    /// Replica promoted, s after the kill.
    pub promoted_s: Option<f64>,
    /// Appending at 90% of the rate again, s after the kill.
    pub back_to_rate_s: Option<f64>,
    /// Acknowledged events lost (in the median summary: the largest).
    pub lost: f64,
    /// The failover probe's verification passed (in the median summary:
    /// in every repetition).
    pub verified: Option<bool>,
}

/// The headline figures of one repetition, in a shape that is the same
/// for every repetition so their median can be taken field by field.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// XADD/s.
    pub ceiling_xadd_per_sec: Option<f64>,
    /// Highest sustained events/s.
    pub saturation_rate: Option<f64>,
    /// Its ratio to the ceiling.
    pub saturation_ratio: Option<f64>,
    /// Latency levels.
    pub latency: Vec<LatencyRow>,
    /// `testbed` binary size, MiB.
    pub binary_mib: Option<f64>,
    /// Footprint per process.
    pub footprint: Vec<FootprintRow>,
    /// Telemetry modes.
    pub telemetry: Vec<TelemetryRow>,
    /// Split vs monolithic.
    pub topology: Vec<TopologyRow>,
    /// Highest rate the simulator achieved against the stub.
    pub simulator_rate: Option<f64>,
    /// That rate as a multiple of the saturation rate.
    pub simulator_multiple: Option<f64>,
    /// The largest multiple of the saturation rate the simulator sustained.
    pub simulator_sustained_multiple: Option<f64>,
    /// Recovery after a failure fault and after SIGKILLs.
    #[serde(default)]
    pub recovery: Option<RecoveryRow>,
    /// Redis Cluster failover, one row per `--redis-wait-replicas`.
    #[serde(default)]
    pub failover: Vec<FailoverRow>,
    /// The query-scale step, without the raw call times.
    #[serde(default)]
    pub query_scale: Option<QueryScale>,
    /// Cold start, one row per role.
    #[serde(default)]
    pub cold_start: Vec<ColdStartRow>,
    /// The k6 comparison (the same figures as the raw ones: they are few).
    #[serde(default)]
    pub k6: Option<K6Compare>,
}

/// The whole record written to `<date>-<host>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Format version of this file.
    pub schema: u32,
    /// When the run started, RFC 3339.
    pub started: String,
    /// Wall time, s.
    pub wall_s: f64,
    /// `--smoke`: figures are not meaningful, targets not judged.
    pub smoke: bool,
    /// The command line.
    pub command: Vec<String>,
    /// Effective settings (durations, search bounds, sim shape, criteria).
    pub settings: Value,
    /// The machine and revision measured.
    pub machine: Machine,
    /// Per repetition: raw figures.
    pub runs: Vec<RunResult>,
    /// Per repetition: the summary.
    pub summaries: Vec<Summary>,
    /// Element-wise median of the summaries.
    pub median: Summary,
    /// Steps that could not run, and why.
    pub notes: Vec<String>,
}

/// The median of numbers (mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// Element-wise median of JSON values of the same shape: numbers by
/// median, objects key by key, arrays of equal length element by element;
/// anything else (strings, booleans, mismatched shapes) from the first.
/// Nulls are skipped, so a figure missing from one repetition does not
/// erase the others.
pub fn median_value(values: &[&Value]) -> Value {
    let present: Vec<&Value> = values.iter().copied().filter(|v| !v.is_null()).collect();
    let Some(first) = present.first() else {
        return Value::Null;
    };
    match first {
        Value::Number(_) => {
            let mut numbers: Vec<f64> = present.iter().filter_map(|v| v.as_f64()).collect();
            let all_integers = present.iter().all(|v| v.is_u64() || v.is_i64());
            match median(&mut numbers) {
                // Counts stay integers (an even count's median is rounded).
                Some(m) if all_integers => Value::from(m.round() as i64),
                Some(m) => Value::from(m),
                None => Value::Null,
            }
        }
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for key in map.keys() {
                let column: Vec<&Value> = present.iter().filter_map(|v| v.get(key)).collect();
                out.insert(key.clone(), median_value(&column));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let same = present
                .iter()
                .all(|v| v.as_array().is_some_and(|a| a.len() == items.len()));
            if !same {
                return (*first).clone();
            }
            let out = (0..items.len())
                .map(|i| {
                    let column: Vec<&Value> = present.iter().filter_map(|v| v.get(i)).collect();
                    median_value(&column)
                })
                .collect();
            Value::Array(out)
        }
        _ => (*first).clone(),
    }
}

/// The median summary of several repetitions.
pub fn median_summary(summaries: &[Summary]) -> Summary {
    let values: Vec<Value> = summaries
        .iter()
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .collect();
    let refs: Vec<&Value> = values.iter().collect();
    let mut median: Summary = serde_json::from_value(median_value(&refs))
        .unwrap_or_else(|_| summaries.first().cloned().unwrap_or_default());
    // Exactly-once holds only if it held every time: one failed
    // verification is not outvoted by the others.
    if let Some(row) = median.recovery.as_mut() {
        let verified: Vec<bool> = summaries
            .iter()
            .filter_map(|s| s.recovery.as_ref()?.verified)
            .collect();
        row.verified = (!verified.is_empty()).then(|| verified.iter().all(|v| *v));
    }
    // The same for failovers, and a loss in one repetition is not
    // outvoted either.
    for (i, row) in median.failover.iter_mut().enumerate() {
        let of_row = || summaries.iter().filter_map(move |s| s.failover.get(i));
        let verified: Vec<bool> = of_row().filter_map(|r| r.verified).collect();
        row.verified = (!verified.is_empty()).then(|| verified.iter().all(|v| *v));
        row.lost = of_row().map(|r| r.lost).fold(0.0, f64::max);
    }
    median
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Odd and even counts; empty has no median.
    #[test]
    fn median_of_numbers() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    /// Nested objects and arrays are reduced field by field.
    #[test]
    fn median_of_shapes() {
        let a = json!({"rate": 100.0, "rows": [{"p99": 1.0}, {"p99": 9.0}], "name": "x", "n": 1});
        let b = json!({"rate": 300.0, "rows": [{"p99": 2.0}, {"p99": 7.0}], "name": "y", "n": 3});
        let c = json!({"rate": 200.0, "rows": [{"p99": 3.0}, {"p99": 8.0}], "name": "z", "n": 2});
        let m = median_value(&[&a, &b, &c]);
        assert_eq!(
            m,
            json!({"rate": 200.0, "rows": [{"p99": 2.0}, {"p99": 8.0}], "name": "x", "n": 2})
        );
    }

    /// A figure missing from one repetition is the median of the others.
    #[test]
    fn nulls_are_skipped() {
        let a = json!({"e2e": null});
        let b = json!({"e2e": 4.0});
        let c = json!({"e2e": 6.0});
        assert_eq!(median_value(&[&a, &b, &c]), json!({"e2e": 5.0}));
    }

    /// The typed summary survives the round trip.
    #[test]
    fn summary_median_round_trips() {
        let one = Summary {
            saturation_rate: Some(1000.0),
            latency: vec![LatencyRow {
                fraction: 0.5,
                ack_p99_ms: 2.0,
                sustained: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut two = one.clone();
        two.saturation_rate = Some(3000.0);
        two.latency[0].ack_p99_ms = 4.0;
        let m = median_summary(&[one, two]);
        assert_eq!(m.saturation_rate, Some(2000.0));
        assert_eq!(m.latency[0].ack_p99_ms, 3.0);
        assert!(m.latency[0].sustained);
    }

    /// Recovery figures are medians of the repetitions, but one failed
    /// verification fails the median's.
    #[test]
    fn recovery_median_keeps_a_failed_verification() {
        let rep = |catch_up: f64, verified: bool| Summary {
            recovery: Some(RecoveryRow {
                fault_catch_up_s: Some(catch_up),
                kill_recovery_max_s: Some(catch_up * 2.0),
                verified: Some(verified),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = median_summary(&[rep(1.0, true), rep(3.0, false), rep(2.0, true)]);
        let row = m.recovery.unwrap();
        assert_eq!(row.fault_catch_up_s, Some(2.0));
        assert_eq!(row.kill_recovery_max_s, Some(4.0));
        assert_eq!(row.verified, Some(false));
        let m = median_summary(&[rep(1.0, true), rep(3.0, true)]);
        assert_eq!(m.recovery.unwrap().verified, Some(true));
    }
}
