//! The recovery step: how long the pipeline takes to be whole again after
//! a failure fault and after a worker is SIGKILLed, under simulator load.
//!
//! One probe (fresh Redis, split processes, `testbed sim --verify` at a
//! moderate fixed rate) with a second worker beside the pipeline's own,
//! during which, in order:
//!
//! 1. **Fault catch-up.** A failure fault (`WorkerControlService/
//!    InjectFault`, share `--recovery-fault-ratio` of the entries, for
//!    `--recovery-fault-ttl`) is injected once processing is under way. At
//!    its expiry the harness reads each partition's appended-events
//!    counter; the figure is the time from the expiry until, on every
//!    partition, no entry appended before the expiry is pending (`XPENDING`'s
//!    oldest id is at or after it) and the events processed or
//!    dead-lettered have reached that counter. Entries are delivered in id
//!    order, so the two together say every entry from before the expiry
//!    was read and acknowledged: none pending, none left unread.
//! 2. **Worker SIGKILL.** The second worker is SIGKILLed at a moment it
//!    holds entries (`XINFO CONSUMERS` shows it with some pending); the
//!    ids it held are read at once (it can no longer ack them), and the
//!    figure is the time from the SIGKILL until none of them is pending with
//!    any consumer (taken over by the surviving worker, processed and
//!    acknowledged). The time until the dead consumer holds nothing (taken
//!    over) is recorded beside it. A new second worker, under a new name
//!    as a restarted pod would be, is then started and killed after 1–2 s
//!    (a random time), up to `--recovery-kills` kills.
//!
//! The simulator's verification must still pass: every accepted event
//! processed exactly once. The store is read through the pipeline's own
//! [`EventLog`], polled every 10 ms.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testbed_stream::{EventLog as _, RedisLog, StoreArgs};

use crate::error::{Error, Result};
use crate::pipeline::{self, KEY_PREFIX, Pipeline, Service, Topology};
use crate::probe::{self, ProbeEnv, ProbeSpec, Target};
use crate::results::{FaultCatchUp, KillRecovery, Recovery};

/// How the store is polled while waiting for a recovery.
const POLL: Duration = Duration::from_millis(10);

/// The most entries of one partition read as stranded by one kill (far
/// more than a worker holds at the rates this step runs).
const MAX_STRANDED: usize = 1_000_000;

/// A kill is started only while this much of the simulator's schedule is
/// left: the worker must hold entries when it dies, which needs load.
const KILL_MIN_LEFT: Duration = Duration::from_secs(1);

/// At most this many workers are killed per counted kill, for those that
/// held nothing by the moment they died.
const ATTEMPTS_PER_KILL: u32 = 5;

/// Settings of the recovery step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecoveryOptions {
    /// Offered events/s.
    pub rate: f64,
    /// The simulator's schedule: every phase happens within it.
    pub duration: Duration,
    /// Share of the entries the failure fault fails.
    pub fault_ratio: f64,
    /// How long the fault lasts.
    pub fault_ttl: Duration,
    /// Workers SIGKILLed (each counted kill).
    pub kills: u32,
    /// The longest one recovery is waited for before it is reported as
    /// not recovered.
    pub timeout: Duration,
}

/// What the phases measured, before the probe's own figures are added.
#[derive(Debug, Default)]
struct Phases {
    fault: Option<FaultCatchUp>,
    kills: Vec<KillRecovery>,
    missed_kills: u32,
    entries_taken_over: Option<u64>,
    notes: Vec<String>,
}

/// Runs the recovery probe labelled `label`.
pub async fn run(env: &ProbeEnv, o: &RecoveryOptions, label: String) -> Result<Recovery> {
    let env = ProbeEnv {
        duration: o.duration,
        ..env.clone()
    };
    let spec = ProbeSpec {
        label: label.clone(),
        rate: o.rate,
        target: Target::Pipeline(Topology::Split),
        sampling: None,
        idle: None,
    };
    let partitions = env.pipeline.partitions;
    let (probe, phases) = probe::run_with(&env, &spec, async |p: &Pipeline| {
        // Called as the simulator starts: its schedule ends this much later.
        let schedule_end = Instant::now() + o.duration;
        phases(p, o, partitions, schedule_end).await
    })
    .await?;
    let phases = phases.unwrap_or_default();
    for note in &phases.notes {
        tracing::warn!(probe = label, note, "recovery");
    }
    Ok(Recovery {
        probe,
        fault: phases.fault,
        kills: phases.kills,
        missed_kills: phases.missed_kills,
        entries_taken_over: phases.entries_taken_over,
        notes: phases.notes,
    })
}

/// How long a newly started second worker runs before it is killed: 1 s
/// plus a random share of another, so that the age of its last heartbeat
/// at the kill is spread over a whole `--heartbeat-interval` (500 ms), as
/// for a worker that dies at any moment.
fn settle() -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    // A fresh `RandomState` is randomly keyed: its hash of nothing is a
    // random number, without a dependency for it.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_secs(1) + Duration::from_millis(random % 1000)
}

/// The consumer name of the `n`th second worker.
fn victim_name(n: u32) -> String {
    format!("bench-second-{n}")
}

async fn phases(
    p: &Pipeline,
    o: &RecoveryOptions,
    partitions: u32,
    schedule_end: Instant,
) -> Result<Phases> {
    let args = StoreArgs {
        redis_url: Some(p.redis_url()),
        partitions,
        key_prefix: KEY_PREFIX.to_owned(),
        ..StoreArgs::default()
    };
    let log = RedisLog::connect(&args)
        .await
        .map_err(|e| Error::Process(format!("reading the pipeline's store: {e}")))?;
    let mut out = Phases::default();
    let mut started = 1;
    let mut second = Some((victim_name(1), p.start_worker(&victim_name(1)).await?));
    wait_processing(&log, o.timeout).await?;

    if let Some((_, worker)) = &second {
        out.fault = match fault_catch_up(p, worker, &log, o).await {
            Ok(f) => {
                if f.catch_up_s.is_none() {
                    out.notes.push(format!(
                        "fault: entries from before the expiry still unacknowledged {:?} after it",
                        o.timeout
                    ));
                }
                Some(f)
            }
            Err(e) => {
                out.notes.push(format!("fault: not measured: {e}"));
                None
            }
        };
    }

    let mut attempts = 0;
    while (out.kills.len() as u32) < o.kills {
        if schedule_end.saturating_duration_since(Instant::now()) < KILL_MIN_LEFT {
            out.notes.push(format!(
                "{} of {} kills: the simulator's schedule ended (raise --recovery-duration)",
                out.kills.len(),
                o.kills
            ));
            break;
        }
        if attempts >= o.kills * ATTEMPTS_PER_KILL {
            out.notes.push(format!(
                "{} of {} kills: the second worker held nothing when killed {attempts} times",
                out.kills.len(),
                o.kills
            ));
            break;
        }
        attempts += 1;
        // A new second worker after each kill, under a new name, as a
        // restarted pod would be.
        let (name, worker) = match second.take() {
            Some(running) => running,
            None => {
                started += 1;
                let name = victim_name(started);
                let worker = p.start_worker(&name).await?;
                // It beats at its start: killed at once, its heartbeat
                // would always be fresh, and its lapse the longest.
                tokio::time::sleep(settle()).await;
                (name, worker)
            }
        };
        match kill_once(p, &log, worker, &name, o.timeout, schedule_end).await? {
            Some(kill) => {
                if kill.recovered_s.is_none() {
                    out.notes.push(format!(
                        "{name}: its entries still pending {:?} after the SIGKILL",
                        o.timeout
                    ));
                }
                out.kills.push(kill);
            }
            None => out.missed_kills += 1,
        }
    }
    if let Some((_, worker)) = second {
        p.stop_worker(worker).await?;
    }
    out.entries_taken_over =
        pipeline::metric_sum(p.worker()?.metrics, "worker_entries_taken_over_total", "")
            .await
            .ok()
            .map(|v| v as u64);
    Ok(out)
}

/// Waits until the pipeline has processed something: the load runs.
async fn wait_processing(log: &RedisLog, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut processed = 0;
        for part in 0..log.partitions() {
            processed += log.figures(part).await.map_or(0, |f| f.processed);
        }
        if processed > 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Process(format!(
                "recovery: nothing processed within {timeout:?} of the load's start"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn store(e: testbed_stream::StoreError) -> Error {
    Error::Process(format!("reading the pipeline's store: {e}"))
}

/// Phase 1: the failure fault and the catch-up after its expiry.
async fn fault_catch_up(
    p: &Pipeline,
    second: &Service,
    log: &RedisLog,
    o: &RecoveryOptions,
) -> Result<FaultCatchUp> {
    let expiry = p.inject_failure(o.fault_ratio, o.fault_ttl).await?;
    tracing::info!(ratio = o.fault_ratio, ttl = ?o.fault_ttl, "failure fault injected");
    if let Ok(left) = expiry.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    // Read at the expiry (a few ms after it): what was appended by then.
    let mut appended = Vec::new();
    let (mut pending_at_expiry, mut backlog_at_expiry) = (0, 0);
    for part in 0..log.partitions() {
        let figures = log.figures(part).await.map_err(store)?;
        appended.push(figures.ingested);
        backlog_at_expiry += figures.backlog();
        pending_at_expiry += log.pending(part).await.map_err(store)?.entries;
    }
    let expiry_ms = expiry
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let since_expiry = || SystemTime::now().duration_since(expiry).unwrap_or_default();
    let mut catch_up_s = None;
    while since_expiry() <= o.timeout {
        if caught_up(log, expiry_ms, &appended).await? {
            catch_up_s = Some(since_expiry().as_secs_f64());
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let mut events_retried = 0.0;
    for worker in [p.worker()?, second] {
        events_retried += pipeline::metric_sum(
            worker.metrics,
            "worker_events_retried_total",
            "injected_fault",
        )
        .await?;
    }
    tracing::info!(
        catch_up_s,
        pending_at_expiry,
        events_retried,
        "fault caught up"
    );
    Ok(FaultCatchUp {
        ratio: o.fault_ratio,
        ttl_s: o.fault_ttl.as_secs_f64(),
        catch_up_s,
        pending_at_expiry,
        backlog_at_expiry,
        events_retried: events_retried as u64,
    })
}

/// Whether every entry appended before `before_ms` has been acknowledged:
/// on each partition none of them is pending, and as many events were
/// processed or dead-lettered as had been `appended` by then.
async fn caught_up(log: &RedisLog, before_ms: u64, appended: &[u64]) -> Result<bool> {
    for (part, appended) in (0..log.partitions()).zip(appended) {
        let pending = log.pending(part).await.map_err(store)?;
        if pending.oldest_ms.is_some_and(|ms| ms < before_ms) {
            return Ok(false);
        }
        let f = log.figures(part).await.map_err(store)?;
        if f.processed + f.dead_lettered < *appended {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Entries pending with consumer `name`, all partitions.
async fn held_by(log: &RedisLog, name: &str) -> Result<u64> {
    let mut held = 0;
    for part in 0..log.partitions() {
        held += log
            .consumers(part)
            .await
            .map_err(store)?
            .iter()
            .filter(|c| c.name == name)
            .map(|c| c.pending)
            .sum::<u64>();
    }
    Ok(held)
}

/// Ids pending on `part`, with any consumer.
async fn pending_ids(log: &RedisLog, part: u32) -> Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    for c in log.consumers(part).await.map_err(store)? {
        if c.pending > 0 {
            let held = log
                .pending_of(part, &c.name, c.pending as usize)
                .await
                .map_err(store)?;
            ids.extend(held);
        }
    }
    Ok(ids)
}

/// Phase 2, once: SIGKILLs `second` as soon as it holds entries and
/// times their recovery. None: it held nothing by the moment it died.
async fn kill_once(
    p: &Pipeline,
    log: &RedisLog,
    second: Service,
    name: &str,
    timeout: Duration,
    schedule_end: Instant,
) -> Result<Option<KillRecovery>> {
    while held_by(log, name).await? == 0 {
        if Instant::now() >= schedule_end {
            p.stop_worker(second).await?;
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let killed = Instant::now();
    second.kill().await?;
    // Dead, it can ack nothing more: what it holds now is what it left.
    let mut stranded: Vec<(u32, BTreeSet<String>)> = Vec::new();
    for part in 0..log.partitions() {
        let ids = log
            .pending_of(part, name, MAX_STRANDED)
            .await
            .map_err(store)?;
        stranded.push((part, ids.into_iter().collect()));
    }
    let stranded_entries = stranded.iter().map(|(_, ids)| ids.len() as u64).sum();
    if stranded_entries == 0 {
        return Ok(None);
    }
    let (mut taken_over_s, mut recovered_s) = (None, None);
    while killed.elapsed() <= timeout {
        if taken_over_s.is_none() && held_by(log, name).await? == 0 {
            taken_over_s = Some(killed.elapsed().as_secs_f64());
        }
        for (part, ids) in &mut stranded {
            if !ids.is_empty() {
                let pending = pending_ids(log, *part).await?;
                ids.retain(|id| pending.contains(id));
            }
        }
        if stranded.iter().all(|(_, ids)| ids.is_empty()) {
            let at = killed.elapsed().as_secs_f64();
            recovered_s = Some(at);
            taken_over_s.get_or_insert(at);
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    tracing::info!(
        consumer = name,
        stranded_entries,
        taken_over_s,
        recovered_s,
        "worker SIGKILL recovered"
    );
    Ok(Some(KillRecovery {
        consumer: name.to_owned(),
        stranded_entries,
        taken_over_s,
        recovered_s,
    }))
}
