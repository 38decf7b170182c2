//! The ceiling: how many single-event `XADD`s per second this Redis takes
//! from `redis-benchmark` (pipelined, many clients), with entries the size
//! of one encoded simulator event.
//!
//! Every pipeline figure is reported as a ratio to this number measured in
//! the same run, so results from different machines (or a noisy neighbour
//! on this one) compare: the pipeline does far more per event than one
//! XADD (validation, dedupe, a Lua append, a read, a fold, an atomic
//! apply), so the ratio says how much of the store's raw append rate the
//! design keeps.

use std::path::Path;
use std::time::{Duration, SystemTime};

use prost::Message as _;
use serde::{Deserialize, Serialize};
use testbed_sim::load::fleet::{Fleet, Mix};

use crate::error::{Error, Result};
use crate::process::Proc;

/// What one ingested event looks like on the wire, and the XADD entry
/// that stands for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventShape {
    /// Mean protobuf-encoded size of a simulator event, bytes.
    pub mean_encoded_bytes: f64,
    /// Field-value pairs of the XADD entry.
    pub fields: usize,
    /// Bytes of each value (the entry's values add up to the mean size).
    pub value_bytes: usize,
}

/// Measures `samples` events of the simulator's default fleet and mix.
pub fn event_shape(fields: usize, samples: u32) -> EventShape {
    let arch = [
        ("amd64".to_owned(), 0.5),
        ("arm64".to_owned(), 0.3),
        ("armv7".to_owned(), 0.2),
    ];
    // A run id shaped like the simulator's own (`run-<secs>-<hex>`).
    let mut fleet = Fleet::new(1000, "sim", &arch, Mix::default(), 1, "run-1763790000-1a2b");
    let now = SystemTime::now();
    let total: usize = (0..samples.max(1))
        .map(|_| fleet.next_event(now).0.encoded_len())
        .sum();
    let mean = total as f64 / f64::from(samples.max(1));
    let fields = fields.max(1);
    EventShape {
        mean_encoded_bytes: mean,
        fields,
        value_bytes: ((mean / fields as f64).round() as usize).max(1),
    }
}

/// The ceiling measurement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ceiling {
    /// XADDs per second reported by redis-benchmark.
    pub xadd_per_sec: f64,
    /// Median latency of a pipelined request, ms (as redis-benchmark reports it).
    pub p50_ms: Option<f64>,
    /// Requests sent (`-n`).
    pub requests: u64,
    /// Pipeline depth (`-P`).
    pub pipeline: u32,
    /// Parallel clients (`-c`).
    pub clients: u32,
    /// The entry each XADD appends.
    pub entry: EventShape,
}

/// Options of the ceiling run.
#[derive(Debug, Clone)]
pub struct CeilingOptions<'a> {
    /// `redis-benchmark` executable.
    pub redis_benchmark: &'a Path,
    /// Port of the server under test.
    pub port: u16,
    /// The entry to append.
    pub entry: EventShape,
    /// `-n`.
    pub requests: u64,
    /// `-P`.
    pub pipeline: u32,
    /// `-c`.
    pub clients: u32,
    /// Where its output goes.
    pub log: &'a Path,
}

/// Runs `redis-benchmark … -q XADD bench:ceiling * f1 v … f5 v` and reads
/// its requests per second.
pub async fn measure(o: CeilingOptions<'_>) -> Result<Ceiling> {
    let value = "x".repeat(o.entry.value_bytes);
    let mut args: Vec<String> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        o.port.to_string(),
        "-P".into(),
        o.pipeline.to_string(),
        "-c".into(),
        o.clients.to_string(),
        "-n".into(),
        o.requests.to_string(),
        "-q".into(),
        "XADD".into(),
        "bench:ceiling".into(),
        "*".into(),
    ];
    for i in 1..=o.entry.fields {
        args.push(format!("f{i}"));
        args.push(value.clone());
    }
    let mut proc = Proc::spawn("redis-benchmark", o.redis_benchmark, &args, &[], &[], o.log)?;
    // A generous bound: even 100 k ops/s finishes -n 1 M in 10 s.
    let limit = Duration::from_secs(60 + o.requests / 10_000);
    let status = proc
        .wait(limit)
        .await?
        .ok_or_else(|| Error::Process(format!("redis-benchmark still running after {limit:?}")))?;
    let output = std::fs::read_to_string(o.log).unwrap_or_default();
    if !status.success() {
        return Err(Error::Process(format!(
            "redis-benchmark exited with {status}: {}",
            output.lines().last().unwrap_or("")
        )));
    }
    let (rps, p50) = parse_output(&output)
        .ok_or_else(|| Error::parse("redis-benchmark output", "no `requests per second` line"))?;
    Ok(Ceiling {
        xadd_per_sec: rps,
        p50_ms: p50,
        requests: o.requests,
        pipeline: o.pipeline,
        clients: o.clients,
        entry: o.entry,
    })
}

/// Reads `…: 534759.31 requests per second, p50=5.087 msec` (the last
/// line of `-q` output; progress lines before it end in `\r`).
fn parse_output(output: &str) -> Option<(f64, Option<f64>)> {
    let line = output
        .split(['\r', '\n'])
        .rfind(|l| l.contains("requests per second"))?;
    let (head, tail) = line.split_once(" requests per second")?;
    let rps: f64 = head.rsplit([' ', ':']).next()?.trim().parse().ok()?;
    let p50 = tail
        .split_once("p50=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    Some((rps, p50))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `-q` summary line of Redis 7's redis-benchmark, after progress lines.
    #[test]
    fn parses_quiet_output() {
        let out = "XADD k * f1 xx: rps=585689.2 (overall: 583365.1) avg_msec=5.124 \r   \r\
                   XADD k * f1 xx: 534759.31 requests per second, p50=5.087 msec\n";
        assert_eq!(parse_output(out), Some((534_759.31, Some(5.087))));
        // Older versions print no percentile.
        let old = "XADD k * f1 xx: 100000.00 requests per second\n";
        assert_eq!(parse_output(old), Some((100_000.0, None)));
        assert_eq!(parse_output("Could not connect"), None);
    }

    /// A simulator event is on the order of 150 bytes; five values share it.
    #[test]
    fn event_shape_is_plausible() {
        let shape = event_shape(5, 2000);
        assert!(
            (80.0..400.0).contains(&shape.mean_encoded_bytes),
            "{shape:?}"
        );
        assert_eq!(shape.fields, 5);
        let total = (shape.value_bytes * 5) as f64;
        assert!((total - shape.mean_encoded_bytes).abs() <= 5.0, "{shape:?}");
    }
}
