//! The failover step: the pipeline on a Redis Cluster of three masters
//! with a replica each ([`crate::cluster`]), split processes, at a fixed
//! rate, once per `--redis-wait-replicas` setting (default 0 and 1):
//!
//! 1. **Steady.** The load alone: its achieved rate and batch-ack
//!    latency, against the other setting's in the same repetition, are
//!    what waiting for a replica costs.
//! 2. **Failover.** The same load; `--failover-kill-after` into it a
//!    master is SIGKILLed. Figures, from the kill: its replica promoted
//!    (`INFO replication` says master), every live node at
//!    `cluster_state:ok`, the killed node restarted on its data (as its
//!    pod would be) and back in sync as the new master's replica (which
//!    `--redis-wait-replicas 1` needs: until then the promoted master has
//!    no replica, and appends to its slots are refused UNAVAILABLE and
//!    re-sent), and events appended at 90% of the offered rate
//!    again over a 500 ms window (each partition's `ingested` counter,
//!    polled every 50 ms through the pipeline's own store client: appends
//!    that reached a master, acknowledged or not). Then the simulator's
//!    verification: acknowledged events, how many were processed, and the
//!    difference, lost with the dead master. With 1 the README promises
//!    none; with 0 some may be (Redis replicates asynchronously).
//!
//! The target (README, "Redis Cluster failover"): appending at the full
//! rate again within the node timeout (`--failover-node-timeout`, 1 s by
//! default) + 1 s, and with
//! `--redis-wait-replicas 1` every acknowledged event processed exactly
//! once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testbed_stream::{EventLog as _, RedisLog, StoreArgs};

use crate::error::{Error, Result};
use crate::pipeline::{KEY_PREFIX, Pipeline, Topology};
use crate::probe::{self, ProbeEnv, ProbeSpec, Target};
use crate::results::{Failover, FailoverRun};
use crate::sim;

/// How often the appended-events counters are read.
const SAMPLE: Duration = Duration::from_millis(50);

/// The window over which the rate after the kill is judged.
const RATE_WINDOW: Duration = Duration::from_millis(500);

/// Share of the offered rate that counts as "the full rate again".
const FULL: f64 = 0.9;

/// How long the replica's promotion and the cluster's healing are waited
/// for.
const HEAL_LIMIT: Duration = Duration::from_secs(20);

/// Settings of the failover step.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverOptions {
    /// Offered events/s.
    pub rate: f64,
    /// The simulator's schedule of each probe.
    pub duration: Duration,
    /// When, into the failover probe's schedule, the master is killed.
    pub kill_after: Duration,
    /// The `--redis-wait-replicas` settings compared.
    pub wait_replicas: Vec<u32>,
    /// The cluster's `--cluster-node-timeout`.
    pub node_timeout: Duration,
}

/// What the failover probe's side task measured.
#[derive(Debug, Default)]
struct Phases {
    promoted_s: Option<f64>,
    cluster_ok_s: Option<f64>,
    rejoined_s: Option<f64>,
    back_to_rate_s: Option<f64>,
    notes: Vec<String>,
}

/// Runs the step; `label` prefixes its probes' labels.
pub async fn run(env: &ProbeEnv, o: &FailoverOptions, label: &str) -> Result<Failover> {
    let mut out = Failover {
        rate: o.rate,
        node_timeout_s: o.node_timeout.as_secs_f64(),
        runs: Vec::new(),
    };
    for &wait in &o.wait_replicas {
        let mut env = ProbeEnv {
            duration: o.duration,
            ..env.clone()
        };
        env.pipeline.redis_cluster = Some(o.node_timeout);
        env.pipeline
            .ingest_args
            .extend(["--redis-wait-replicas".to_owned(), wait.to_string()]);
        let spec = |name: &str| ProbeSpec {
            label: format!("{label}-wait{wait}-{name}"),
            rate: o.rate,
            target: Target::Pipeline(Topology::Split),
            sampling: None,
            idle: None,
        };
        let steady = probe::run(&env, &spec("steady")).await?;
        let kill_spec = spec("kill");
        let (failover, phases) = probe::run_with(&env, &kill_spec, async |p: &Pipeline| {
            kill_a_master(p, o, env.pipeline.partitions).await
        })
        .await?;
        let phases = phases.unwrap_or_default();
        let report = sim::read_report(&env.work.join(&kill_spec.label).join("sim.json")).ok();
        let longest_gap_s = report.as_ref().map(|r| r.total.longest_gap_s);
        let verification = report.and_then(|r| r.verification);
        let (acknowledged, processed) = verification.as_ref().map_or((0, 0), |v| {
            (
                v.expected.iter().sum::<u64>(),
                v.processed.iter().sum::<u64>(),
            )
        });
        for note in &phases.notes {
            tracing::warn!(probe = kill_spec.label, note, "failover");
        }
        tracing::info!(
            probe = kill_spec.label,
            wait_replicas = wait,
            promoted_s = ?phases.promoted_s,
            back_to_rate_s = ?phases.back_to_rate_s,
            longest_gap_s = ?longest_gap_s,
            acknowledged,
            lost = acknowledged.saturating_sub(processed),
            "failover"
        );
        out.runs.push(FailoverRun {
            wait_replicas: wait,
            steady,
            failover,
            promoted_s: phases.promoted_s,
            cluster_ok_s: phases.cluster_ok_s,
            rejoined_s: phases.rejoined_s,
            back_to_rate_s: phases.back_to_rate_s,
            longest_gap_s,
            acknowledged,
            processed,
            lost: acknowledged.saturating_sub(processed),
            notes: phases.notes,
        });
    }
    Ok(out)
}

/// Beside the failover probe's load: follows the appended-events
/// counters, kills a master at `kill_after`, and times the healing.
async fn kill_a_master(p: &Pipeline, o: &FailoverOptions, partitions: u32) -> Result<Phases> {
    let started = Instant::now();
    let cluster = p
        .cluster()
        .ok_or_else(|| Error::Process("the failover step needs a Redis Cluster".to_owned()))?;
    let log = RedisLog::connect(&StoreArgs {
        redis_url: Some(p.redis_url()),
        redis_cluster: true,
        partitions,
        key_prefix: KEY_PREFIX.to_owned(),
        redis_timeout: Duration::from_millis(300),
        ..StoreArgs::default()
    })
    .await
    .map_err(|e| Error::Process(format!("reading the pipeline's store: {e}")))?;
    let samples: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let follower = tokio::spawn(follow(log, partitions, samples.clone()));

    let mut out = Phases::default();
    tokio::time::sleep(o.kill_after.saturating_sub(started.elapsed())).await;
    let victim = cluster.masters().first().copied();
    let replica = victim.and_then(|m| cluster.replica_of(m));
    let (Some(victim), Some(replica)) = (victim, replica) else {
        follower.abort();
        out.notes
            .push("no master with a live replica to kill: nothing measured".to_owned());
        return Ok(out);
    };
    cluster.kill(victim).await?;
    let killed = Instant::now();
    match cluster.wait_master(replica, HEAL_LIMIT).await {
        Ok(()) => out.promoted_s = Some(killed.elapsed().as_secs_f64()),
        Err(e) => out.notes.push(e.to_string()),
    }
    match cluster.wait_ok(HEAL_LIMIT).await {
        Ok(()) => out.cluster_ok_s = Some(killed.elapsed().as_secs_f64()),
        Err(e) => out.notes.push(e.to_string()),
    }
    // As a pod would be: restarted on its data, it rejoins as the new
    // master's replica, which `--redis-wait-replicas 1` needs again.
    match cluster.restart(victim, HEAL_LIMIT).await {
        Ok(()) => out.rejoined_s = Some(killed.elapsed().as_secs_f64()),
        Err(e) => out
            .notes
            .push(format!("the killed master did not rejoin: {e}")),
    }
    // The rate is judged over the rest of the schedule.
    tokio::time::sleep(o.duration.saturating_sub(started.elapsed())).await;
    follower.abort();
    let samples = samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    out.back_to_rate_s = back_to(&samples, killed, o.rate * FULL).map(|d| d.as_secs_f64());
    if out.back_to_rate_s.is_none() {
        out.notes.push(format!(
            "appends never reached {:.0}% of the rate again before the schedule ended",
            FULL * 100.0
        ));
    }
    Ok(out)
}

/// Appends `(when, events appended on every partition)` to `samples`
/// every [`SAMPLE`]; a reading that fails on any partition is skipped.
async fn follow(log: RedisLog, partitions: u32, samples: Arc<Mutex<Vec<(Instant, u64)>>>) {
    loop {
        let mut total = Some(0);
        for partition in 0..partitions {
            total = match (total, log.figures(partition).await) {
                (Some(t), Ok(f)) => Some(t + f.ingested),
                _ => None,
            };
        }
        if let Some(total) = total {
            samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((Instant::now(), total));
        }
        tokio::time::sleep(SAMPLE).await;
    }
}

/// The time from `from` until the first [`RATE_WINDOW`] that starts at or
/// after it with at least `rate` events/s appended.
fn back_to(samples: &[(Instant, u64)], from: Instant, rate: f64) -> Option<Duration> {
    let after: Vec<&(Instant, u64)> = samples.iter().filter(|(at, _)| *at >= from).collect();
    after.iter().enumerate().find_map(|(i, (at, n))| {
        let (later, m) = after[i..]
            .iter()
            .find(|(t, _)| t.duration_since(*at) >= RATE_WINDOW)?;
        let window = later.duration_since(*at).as_secs_f64();
        (m.saturating_sub(*n) as f64 / window >= rate).then(|| at.duration_since(from))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first full window after the kill counts; a slow window before
    /// it does not; no full window at all is `None`.
    #[test]
    fn finds_the_first_window_at_the_rate() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 100 events/s until 1 s, stalled until 2 s, then 1000 events/s.
        let mut samples = Vec::new();
        let mut total = 0;
        for ms in (0..4000).step_by(50) {
            total += match ms {
                0..1000 => 5,
                1000..2000 => 0,
                _ => 50,
            };
            samples.push((at(ms), total));
        }
        let back = back_to(&samples, at(1000), 900.0).unwrap();
        assert!(
            back >= Duration::from_millis(850) && back <= Duration::from_millis(1000),
            "{back:?}"
        );
        assert_eq!(back_to(&samples, at(1000), 5000.0), None);
    }
}
