//! The k6 step: the simulator set against k6 as load generators, both
//! sending unary `IngestService/Publish` calls of the same batch size to
//! the same acking stub (`testbed-bench --stub`), one after the other.
//!
//! 1. k6 (`bench/k6/unary.js`) with `--k6-vus` VUs, closed loop, for
//!    `--k6-duration`: each VU has its connection and one call in flight,
//!    as k6 users run it. Enough VUs saturate it (it is CPU-bound).
//! 2. `testbed sim --unary` at k6's achieved events/s (open loop, same
//!    batch size, `--k6-sim-connections` connections, calls multiplexed):
//!    what the same throughput costs the simulator.
//! 3. `testbed sim --unary` at `--k6-sim-multiples` of k6's rate in turn,
//!    until one is not sustained (achieved under 95% of the offered rate,
//!    a call failed, or the ack p99 over 1 s, which also stops the run
//!    early through the simulator's own `ack_p99<1s:abort` threshold, so
//!    an open-loop queue cannot grow for the whole run): the highest rate
//!    sustained is the most the simulator sends on the same stub.
//!
//! CPU is each generator process's own `utime + stime`, read from
//! `/proc/PID/stat` once it has exited but before it is reaped (so all of
//! it, start-up and the last moments included). Figures and the section
//! are [`crate::k6_report`]'s.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Context as _, Error, Result};
use crate::k6_report::{K6Compare, LoadSide};
use crate::process::{Proc, inherited_settings, log_tail};
use crate::procfs;
use crate::serve;
use crate::sim;

/// Settings of the k6 step.
#[derive(Debug, Clone)]
pub struct K6Options {
    /// The k6 binary.
    pub k6: PathBuf,
    /// The script (`bench/k6/unary.js`).
    pub script: PathBuf,
    /// k6's virtual users.
    pub vus: u32,
    /// Each run's length.
    pub duration: Duration,
    /// Events per call, both sides.
    pub batch: u32,
    /// Devices the events are spread over, both sides.
    pub devices: u32,
    /// The simulator's connections.
    pub sim_connections: u32,
    /// Multiples of k6's rate offered by the simulator, in turn, until
    /// one is not sustained.
    pub sim_multiples: Vec<f64>,
}

/// A simulator run is sustained at or above this share of its offered rate.
pub const SUSTAIN_SHARE: f64 = 0.95;

/// A simulator run is sustained with an ack p99 at most this, ms.
pub const SUSTAIN_P99_MS: f64 = 1000.0;

/// The process's final CPU and how it ended.
struct Ended {
    status: ExitStatus,
    cpu_s: f64,
    wall_s: f64,
    peak_rss_bytes: u64,
    stub_cpu_s: f64,
}

/// Waits for `proc` to exit (until `limit` after `started`), reads its
/// CPU while it is a zombie, then reaps it; the stub's CPU since
/// `stub_before` is read at the same moment.
async fn wait_measured(
    mut proc: Proc,
    started: Instant,
    limit: Duration,
    stub_pid: u32,
    stub_before: f64,
) -> Result<Ended> {
    let pid = proc.pid();
    let mut last = procfs::Sample::default();
    let (cpu_s, wall_s) = loop {
        match procfs::state(pid) {
            Some('Z') | None => {
                let wall = started.elapsed().as_secs_f64();
                let cpu = procfs::sample(pid).map_or(last.cpu_seconds, |s| s.cpu_seconds);
                break (cpu.max(last.cpu_seconds), wall);
            }
            Some(_) => {
                // Once exiting, a process has no memory figures any more
                // (and is not `Z` yet): keep the largest seen.
                if let Ok(s) = procfs::sample(pid) {
                    last.cpu_seconds = last.cpu_seconds.max(s.cpu_seconds);
                    last.peak_rss_bytes = last.peak_rss_bytes.max(s.peak_rss_bytes);
                }
            }
        }
        if started.elapsed() > limit {
            return Err(Error::Process(format!(
                "{} still running after {limit:?}: {}",
                proc.name(),
                log_tail(proc.log())
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let stub_cpu_s = procfs::sample(stub_pid).map_or(0.0, |s| s.cpu_seconds) - stub_before;
    let status = proc
        .wait(Duration::from_secs(5))
        .await?
        .ok_or_else(|| Error::Process(format!("{} exited but was not reaped", proc.name())))?;
    Ok(Ended {
        status,
        cpu_s,
        wall_s,
        peak_rss_bytes: last.peak_rss_bytes,
        stub_cpu_s: stub_cpu_s.max(0.0),
    })
}

fn exit_text(status: ExitStatus) -> Option<String> {
    (!status.success()).then(|| status.to_string())
}

/// Runs the step; with only a note when k6 is missing.
pub async fn run(testbed: &Path, self_exe: &Path, work: &Path, o: &K6Options) -> Result<K6Compare> {
    let mut out = K6Compare {
        batch: o.batch,
        duration_s: o.duration.as_secs_f64(),
        ..Default::default()
    };
    if !o.k6.exists() {
        out.notes.push(format!(
            "not measured: {} missing (scripts/setup-tools installs it)",
            o.k6.display()
        ));
        return Ok(out);
    }
    std::fs::create_dir_all(work).context(|| format!("creating {}", work.display()))?;
    let (stub, url) = serve::start_helper(self_exe, work, "stub").await?;
    let result = sides(testbed, work, o, &stub, &url, &mut out).await;
    stub.terminate(Duration::from_secs(5)).await?;
    result?;
    Ok(out)
}

async fn sides(
    testbed: &Path,
    work: &Path,
    o: &K6Options,
    stub: &Proc,
    url: &str,
    out: &mut K6Compare,
) -> Result<()> {
    let k6 = run_k6(work, o, stub.pid(), url).await?;
    let k6_rate = k6.events_per_s;
    out.sides.push(k6);
    if k6_rate <= 0.0 {
        out.notes
            .push("k6 achieved nothing: the simulator was not run against it".into());
        return Ok(());
    }
    let matched = run_sim(testbed, work, o, stub.pid(), url, k6_rate, 1.0).await?;
    out.sides.push(matched);
    for m in &o.sim_multiples {
        let side = run_sim(testbed, work, o, stub.pid(), url, k6_rate * m, *m).await?;
        let sustained = side.sustained == Some(true);
        out.sides.push(side);
        if !sustained {
            return Ok(());
        }
    }
    if !o.sim_multiples.is_empty() {
        out.notes.push(format!(
            "the simulator sustained every multiple of k6's rate offered (up to {}×): it was not saturated; add larger --k6-sim-multiples",
            o.sim_multiples.iter().copied().fold(0.0, f64::max)
        ));
    }
    Ok(())
}

/// k6's run and its summary.
async fn run_k6(work: &Path, o: &K6Options, stub_pid: u32, url: &str) -> Result<LoadSide> {
    let summary = work.join("k6-summary.json");
    let _ = std::fs::remove_file(&summary);
    let addr = url.trim_start_matches("http://");
    let d = humantime::format_duration(o.duration).to_string();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--quiet".into(),
        "--no-usage-report".into(),
        "--summary-trend-stats".into(),
        "med,p(99),max".into(),
        "--summary-export".into(),
        summary.display().to_string(),
    ];
    for (k, v) in [
        ("TESTBED_ADDR", addr.to_owned()),
        ("VUS", o.vus.to_string()),
        ("DURATION", d),
        ("BATCH", o.batch.to_string()),
        ("DEVICES", o.devices.to_string()),
        ("RUN_ID", "bench-k6".to_owned()),
    ] {
        args.extend(["-e".into(), format!("{k}={v}")]);
    }
    args.push(o.script.display().to_string());
    let loadavg = crate::machine::loadavg_short();
    let stub_before = procfs::sample(stub_pid).map_or(0.0, |s| s.cpu_seconds);
    let started = Instant::now();
    let proc = Proc::spawn(
        "k6",
        &o.k6,
        &args,
        &[],
        &inherited_settings(),
        &work.join("k6.log"),
    )?;
    let limit = o.duration + Duration::from_secs(60);
    let ended = wait_measured(proc, started, limit, stub_pid, stub_before).await?;
    let text = std::fs::read_to_string(&summary).context(|| {
        format!(
            "reading k6's summary {} ({})",
            summary.display(),
            log_tail(&work.join("k6.log"))
        )
    })?;
    let json: Value = serde_json::from_str(&text).map_err(|e| Error::parse("k6's summary", e))?;
    let mut side = from_k6_summary(&json, o.batch)
        .ok_or_else(|| Error::parse("k6's summary", "no iterations or grpc_req_duration"))?;
    side.config = format!("{} VUs, one connection and one call in flight each", o.vus);
    side.cpu_s = ended.cpu_s;
    side.wall_s = ended.wall_s;
    side.peak_rss_bytes = ended.peak_rss_bytes;
    side.stub_cpu_s = ended.stub_cpu_s;
    side.exit = exit_text(ended.status);
    side.loadavg = loadavg;
    Ok(side)
}

/// The name of the simulator's run at `multiple` of k6's rate.
pub fn sim_name(multiple: f64) -> String {
    if (multiple - 1.0).abs() < 1e-9 {
        "sim at k6's rate".to_owned()
    } else {
        format!("sim at {multiple}× k6's rate")
    }
}

/// A [`LoadSide`] from k6's `--summary-export` (figures only; CPU is
/// the caller's). Each iteration is one call of `batch` events; a call
/// whose batch was not all accepted counts as failed and its events not.
pub fn from_k6_summary(json: &Value, batch: u32) -> Option<LoadSide> {
    let metrics = json.get("metrics")?;
    let num = |metric: &str, field: &str| metrics.get(metric)?.get(field)?.as_f64();
    let requests = num("iterations", "count")? as u64;
    let rate = num("iterations", "rate")?;
    let accepted_check = json
        .get("root_group")
        .and_then(|g| g.get("checks"))
        .and_then(|c| c.get("Publish accepted the batch"))
        .and_then(|c| c.get("passes"))
        .and_then(Value::as_u64)
        .unwrap_or(requests);
    let failed = num("checks", "fails").unwrap_or(0.0) as u64;
    let ok_share = if requests > 0 {
        accepted_check as f64 / requests as f64
    } else {
        0.0
    };
    Some(LoadSide {
        name: "k6".into(),
        requests: accepted_check,
        events: accepted_check * u64::from(batch),
        failed,
        requests_per_s: rate * ok_share,
        events_per_s: rate * ok_share * f64::from(batch),
        p50_ms: num("grpc_req_duration", "med")?,
        p99_ms: num("grpc_req_duration", "p(99)").unwrap_or(0.0),
        ..Default::default()
    })
}

/// One `testbed sim --unary` run at `rate` events/s.
async fn run_sim(
    testbed: &Path,
    work: &Path,
    o: &K6Options,
    stub_pid: u32,
    url: &str,
    rate: f64,
    multiple: f64,
) -> Result<LoadSide> {
    let name = sim_name(multiple);
    let label = format!("sim-x{multiple}");
    let mut spec = sim::SimSpec {
        target: url.to_owned(),
        verify_with: None,
        rate,
        duration: o.duration,
        devices: o.devices,
        connections: o.sim_connections,
        streams: 1,
        batch_size: o.batch,
        drain_timeout: Duration::from_secs(10),
        verify_timeout: Duration::from_secs(1),
        run_id: format!("bench-{label}"),
        report: work.join(format!("{label}.json")),
    };
    // Batches are sized for about 100 a second: below 100 × batch events/s
    // they would be smaller than k6's.
    spec.rate = spec.rate.max(f64::from(o.batch) * 100.0);
    let mut args = spec.args();
    args.push("--unary".into());
    // An open-loop run above what the simulator can send queues without
    // bound; the simulator stops its own schedule once the p99 is over
    // the limit (the batches in flight still drain).
    args.extend([
        "--threshold".into(),
        format!("ack_p99<{SUSTAIN_P99_MS}ms:abort"),
        "--threshold-warmup".into(),
        "2s".into(),
        "--threshold-window".into(),
        "2s".into(),
    ]);
    let _ = std::fs::remove_file(&spec.report);
    let loadavg = crate::machine::loadavg_short();
    let stub_before = procfs::sample(stub_pid).map_or(0.0, |s| s.cpu_seconds);
    let started = Instant::now();
    let proc = Proc::spawn(
        "sim",
        testbed,
        &args,
        &[],
        &inherited_settings(),
        &work.join(format!("{label}.log")),
    )?;
    let ended = wait_measured(proc, started, spec.limit(), stub_pid, stub_before).await?;
    let report = sim::read_report(&spec.report)?;
    let t = &report.total;
    let ok_calls = t.status_codes.get("OK").copied().unwrap_or(0);
    let answered: u64 = t.status_codes.values().sum();
    let failed = answered - ok_calls + t.failed + t.unanswered;
    let sustained = t.achieved_rate >= spec.rate * SUSTAIN_SHARE
        && failed == 0
        && t.latency.p99_ms <= SUSTAIN_P99_MS
        && ended.status.success();
    Ok(LoadSide {
        name,
        sustained: Some(sustained),
        config: format!(
            "--unary --rate {:.0} --batch-size {} --connections {}",
            spec.rate, o.batch, o.sim_connections
        ),
        offered_events_per_s: Some(spec.rate),
        requests: ok_calls,
        events: t.accepted,
        failed,
        requests_per_s: if t.duration_s > 0.0 {
            ok_calls as f64 / t.duration_s
        } else {
            0.0
        },
        events_per_s: t.achieved_rate,
        p50_ms: t.latency.p50_ms,
        p99_ms: t.latency.p99_ms,
        cpu_s: ended.cpu_s,
        wall_s: ended.wall_s,
        peak_rss_bytes: ended.peak_rss_bytes,
        stub_cpu_s: ended.stub_cpu_s,
        exit: exit_text(ended.status),
        loadavg,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Calls, events and rates come from k6's iterations and checks; a
    /// call whose batch was not all accepted counts in neither.
    #[test]
    fn reads_k6_summary() {
        let summary = json!({
            "root_group": {"checks": {
                "Publish status OK": {"passes": 1000, "fails": 0},
                "Publish accepted the batch": {"passes": 990, "fails": 10}
            }},
            "metrics": {
                "iterations": {"count": 1000, "rate": 50.0},
                "checks": {"passes": 1990, "fails": 10, "value": 0.995},
                "grpc_req_duration": {"med": 2.5, "p(99)": 9.0, "max": 20.0}
            }
        });
        let side = from_k6_summary(&summary, 50).unwrap();
        assert_eq!((side.requests, side.events, side.failed), (990, 49_500, 10));
        assert!((side.requests_per_s - 49.5).abs() < 1e-9);
        assert!((side.events_per_s - 2475.0).abs() < 1e-9);
        assert_eq!((side.p50_ms, side.p99_ms), (2.5, 9.0));
        assert!(from_k6_summary(&json!({"metrics": {}}), 50).is_none());
    }
}
