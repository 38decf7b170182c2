//! Folding a batch of events into aggregate writes.
//!
//! One entry's events become per-key deltas in Rust (sums and counts added
//! up, minima and maxima taken) before one atomic apply, so the cost in the
//! store is per distinct key, not per event.

use std::collections::BTreeMap;
use std::time::Duration;

use testbed_proto::v1::{Event, event::Payload};
use testbed_stream::keys::{Keys, fields};
use testbed_stream::{Entry, Op, Ops, latency_bucket};

/// Count, sum, min and max of one value.
#[derive(Debug, Clone, Copy)]
struct Summary {
    n: i64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Summary {
    fn of(v: f64) -> Self {
        Self {
            n: 1,
            sum: v,
            min: v,
            max: v,
        }
    }

    fn add(&mut self, v: f64) {
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// Deltas for one hash key.
#[derive(Debug, Default)]
struct HashDelta {
    ints: BTreeMap<String, i64>,
    summaries: BTreeMap<String, Summary>,
    sets: BTreeMap<String, String>,
}

impl HashDelta {
    fn incr(&mut self, field: impl Into<String>, by: i64) {
        *self.ints.entry(field.into()).or_default() += by;
    }

    fn summarise(&mut self, prefix: &str, v: f64) {
        self.summaries
            .entry(prefix.to_owned())
            .and_modify(|s| s.add(v))
            .or_insert_with(|| Summary::of(v));
    }
}

/// The minute (Unix seconds / 60) of a timestamp.
fn minute_of(ts: Option<&prost_types::Timestamp>) -> i64 {
    ts.map_or(0, |t| t.seconds.div_euclid(60))
}

fn millis_of(ts: Option<&prost_types::Timestamp>) -> f64 {
    ts.map_or(0.0, |t| {
        t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1e6
    })
}

fn seconds_of(d: Option<&prost_types::Duration>) -> f64 {
    d.map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// Builds the aggregate writes of `entry`, whose decoded events are `events`.
pub fn fold(entry: &Entry, events: &[Event], keys: &Keys, retention: Duration) -> Ops {
    let p = entry.partition;
    let mut hashes: BTreeMap<String, HashDelta> = BTreeMap::new();
    let mut zincr: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut run_events: BTreeMap<String, u64> = BTreeMap::new();
    let mut run_first: BTreeMap<String, f64> = BTreeMap::new();

    for event in events {
        let device = event.device_id.as_str();
        let minute = minute_of(event.observed_at.as_ref());
        let observed_ms = millis_of(event.observed_at.as_ref());
        let dm = hashes
            .entry(keys.device_minute(p, device, minute))
            .or_default();
        dm.incr(fields::EVENTS, 1);
        let mut top = |metric: &str, by: f64| {
            *zincr
                .entry((keys.top(p, metric, minute), device.to_owned()))
                .or_default() += by;
        };
        top("events", 1.0);
        match &event.payload {
            Some(Payload::Gpu(g)) => {
                dm.incr(fields::GPU_COUNT, 1);
                dm.summarise("gpu.util", g.utilization);
                dm.summarise("gpu.mem", g.memory_used_bytes as f64);
                dm.summarise("gpu.temp", g.temperature_celsius);
                dm.summarise("gpu.power", g.power_watts);
                top("gpu.n", 1.0);
                top("gpu.util", g.utilization);
                top("gpu.power", g.power_watts);
                top("gpu.temp", g.temperature_celsius);
            }
            Some(Payload::Tokens(t)) => {
                let latency = seconds_of(t.latency.as_ref());
                dm.incr(fields::TOKENS_COUNT, 1);
                dm.incr(fields::PROMPT_TOKENS, t.prompt_tokens as i64);
                dm.incr(fields::COMPLETION_TOKENS, t.completion_tokens as i64);
                dm.summarise("tok.lat", latency);
                top("tokens", (t.prompt_tokens + t.completion_tokens) as f64);
                let bucket = latency_bucket((latency * 1000.0) as u64);
                let tok = hashes.entry(keys.tokens_minute(p, minute)).or_default();
                for group in [format!("model:{}", t.model), format!("tenant:{}", t.tenant)] {
                    tok.incr(format!("{group}:n"), 1);
                    tok.incr(format!("{group}:prompt"), t.prompt_tokens as i64);
                    tok.incr(format!("{group}:completion"), t.completion_tokens as i64);
                    tok.incr(format!("{group}:lat:{bucket}"), 1);
                }
            }
            Some(Payload::Metric(m)) => {
                dm.incr(fields::METRIC_COUNT, 1);
                let prefix = format!("metric:{}", m.name);
                dm.incr(format!("{prefix}.n"), 1);
                dm.summarise(&prefix, m.value);
                dm.sets.insert(format!("{prefix}.unit"), m.unit.clone());
            }
            // Validated at ingest; an event without payload is still counted.
            None => {}
        }
        let s = seen.entry(device.to_owned()).or_insert(observed_ms);
        *s = s.max(observed_ms);
        if !event.labels.is_empty() {
            let json = serde_json::to_string(&event.labels).unwrap_or_else(|_| "{}".to_owned());
            labels.insert(device.to_owned(), json);
        }
        if !event.run_id.is_empty() {
            *run_events.entry(event.run_id.clone()).or_default() += 1;
            let first = run_first.entry(event.run_id.clone()).or_insert(observed_ms);
            *first = first.min(observed_ms);
            let run = hashes.entry(keys.run(p, &event.run_id)).or_default();
            run.incr("processed", 1);
            run.incr(
                match &event.payload {
                    Some(Payload::Gpu(_)) => "gpu",
                    Some(Payload::Tokens(_)) => "tokens",
                    Some(Payload::Metric(_)) => "metric",
                    None => "none",
                },
                1,
            );
        }
    }

    let ttl = retention.as_secs().max(1);
    let mut ops = Ops::default();
    for (key, delta) in hashes {
        let k = ops.key(key);
        for (field, by) in delta.ints {
            ops.push(Op::HashIncr(k, field, by));
        }
        for (prefix, s) in delta.summaries {
            ops.push(Op::HashIncr(k, fields::summary(&prefix, "count"), s.n));
            ops.push(Op::HashIncrFloat(k, fields::summary(&prefix, "sum"), s.sum));
            ops.push(Op::HashMin(k, fields::summary(&prefix, "min"), s.min));
            ops.push(Op::HashMax(k, fields::summary(&prefix, "max"), s.max));
        }
        for (field, value) in delta.sets {
            ops.push(Op::HashSet(k, field, value));
        }
        ops.push(Op::Expire(k, ttl));
    }
    let mut zkeys = Vec::new();
    for ((key, member), by) in zincr {
        let k = ops.key(key);
        ops.push(Op::ZIncr(k, member, by));
        zkeys.push(k);
    }
    zkeys.dedup();
    for k in zkeys {
        ops.push(Op::Expire(k, ttl));
    }
    let devices = ops.key(keys.devices(p));
    for (device, ms) in seen {
        let d = ops.key(keys.device(p, &device));
        ops.push(Op::HashMax(d, "seen".to_owned(), ms.floor()));
        if let Some(json) = labels.remove(&device) {
            ops.push(Op::HashSet(d, "labels".to_owned(), json));
        }
        ops.push(Op::Expire(d, ttl));
        ops.push(Op::ZMax(devices, device, ms.floor()));
    }
    let e2e = ops.key(keys.e2e(p, (entry.appended_ms() / 60_000) as i64));
    ops.e2e.push((e2e, events.len() as u64));
    ops.push(Op::Expire(e2e, ttl));
    // The delivery ledger of each simulator run: first event time, last
    // applied time (this worker's clock), and the run's own latency histogram.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64);
    for (run_id, n) in run_events {
        let run = ops.key(keys.run(p, &run_id));
        if let Some(first) = run_first.get(&run_id) {
            ops.push(Op::HashMin(run, "first_event_ms".to_owned(), first.floor()));
        }
        ops.push(Op::HashMax(run, "last_processed_ms".to_owned(), now_ms));
        let hist = ops.key(keys.run_e2e(p, &run_id));
        ops.e2e.push((hist, n));
        ops.push(Op::Expire(hist, ttl));
    }
    ops
}

/// The writes that go with dead-lettering `entry`: each simulator run's
/// ledger counts its events as dead-lettered.
pub fn dead_letter_ops(entry: &Entry, events: &[Event], keys: &Keys, retention: Duration) -> Ops {
    let mut per_run: BTreeMap<&str, i64> = BTreeMap::new();
    for event in events.iter().filter(|e| !e.run_id.is_empty()) {
        *per_run.entry(event.run_id.as_str()).or_default() += 1;
    }
    let mut ops = Ops::default();
    for (run_id, n) in per_run {
        let run = ops.key(keys.run(entry.partition, run_id));
        ops.push(Op::HashIncr(run, "dead_lettered".to_owned(), n));
        ops.push(Op::Expire(run, retention.as_secs().max(1)));
    }
    ops
}

#[cfg(test)]
mod tests {
    use testbed_proto::v1::{GpuSample, Metric, TokenUsage};

    use super::*;

    fn event(device: &str, secs: i64, payload: Payload) -> Event {
        Event {
            event_id: format!("{device}-{secs}"),
            device_id: device.into(),
            observed_at: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            labels: [("arch".to_owned(), "arm64".to_owned())].into(),
            run_id: "run-1".into(),
            payload: Some(payload),
        }
    }

    fn gpu(util: f64, power: f64) -> Payload {
        Payload::Gpu(GpuSample {
            utilization: util,
            power_watts: power,
            temperature_celsius: 50.0,
            ..Default::default()
        })
    }

    fn find<'a>(ops: &'a Ops, key: &str) -> Vec<&'a Op> {
        let Some(i) = ops.keys.iter().position(|k| k == key) else {
            return Vec::new();
        };
        ops.ops
            .iter()
            .filter(|op| match op {
                Op::HashIncr(k, ..)
                | Op::HashIncrFloat(k, ..)
                | Op::HashMin(k, ..)
                | Op::HashMax(k, ..)
                | Op::HashSet(k, ..)
                | Op::ZIncr(k, ..)
                | Op::ZMax(k, ..)
                | Op::Expire(k, ..) => usize::from(*k) == i,
            })
            .collect()
    }

    /// Two GPU samples of one device in one minute fold into one delta set.
    #[test]
    fn folds_same_minute_into_one_delta() {
        let keys = Keys::new("t");
        let entry = Entry {
            id: "120000-0".into(),
            partition: 2,
            meta: vec![],
            events: vec![],
            deliveries: 1,
        };
        let events = [
            event("d1", 60, gpu(0.25, 100.0)),
            event("d1", 61, gpu(0.75, 300.0)),
        ];
        let ops = fold(&entry, &events, &keys, Duration::from_secs(3600));
        let dm = find(&ops, &keys.device_minute(2, "d1", 1));
        assert!(dm.contains(&&Op::HashIncr(0, "n".into(), 2)));
        assert!(dm.contains(&&Op::HashIncrFloat(0, "gpu.util.sum".into(), 1.0)));
        assert!(dm.contains(&&Op::HashMin(0, "gpu.util.min".into(), 0.25)));
        assert!(dm.contains(&&Op::HashMax(0, "gpu.util.max".into(), 0.75)));
        assert!(dm.contains(&&Op::HashMax(0, "gpu.power.max".into(), 300.0)));
        assert!(dm.contains(&&Op::Expire(0, 3600)));
        let run = find(&ops, &keys.run(2, "run-1"));
        // gpu, processed, expire, first event time, last processed time
        assert_eq!(run.len(), 5, "{run:?}");
        assert!(run.iter().any(
            |op| matches!(op, Op::HashMin(_, f, ms) if f == "first_event_ms" && *ms == 60_000.0)
        ));
        let device = find(&ops, &keys.device(2, "d1"));
        assert!(
            device
                .iter()
                .any(|op| matches!(op, Op::HashMax(_, f, ms) if f == "seen" && *ms == 61_000.0))
        );
        assert!(device.iter().any(
            |op| matches!(op, Op::HashSet(_, f, v) if f == "labels" && v == "{\"arch\":\"arm64\"}")
        ));
        assert_eq!(
            ops.e2e.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            vec![2, 2]
        );
    }

    /// Tokens feed per-model and per-tenant groups; metrics their own names.
    #[test]
    fn folds_tokens_and_metrics() {
        let keys = Keys::new("t");
        let entry = Entry {
            id: "60000-0".into(),
            partition: 0,
            meta: vec![],
            events: vec![],
            deliveries: 1,
        };
        let tokens = Payload::Tokens(TokenUsage {
            model: "llama".into(),
            tenant: "a".into(),
            prompt_tokens: 10,
            completion_tokens: 5,
            latency: Some(prost_types::Duration {
                seconds: 0,
                nanos: 250_000_000,
            }),
        });
        let metric = Payload::Metric(Metric {
            name: "fan".into(),
            value: 3.0,
            unit: "1".into(),
        });
        let ops = fold(
            &entry,
            &[event("d", 0, tokens), event("d", 1, metric)],
            &keys,
            Duration::from_secs(60),
        );
        let tok = find(&ops, &keys.tokens_minute(0, 0));
        assert!(
            tok.iter()
                .any(|op| matches!(op, Op::HashIncr(_, f, 10) if f == "model:llama:prompt"))
        );
        assert!(
            tok.iter()
                .any(|op| matches!(op, Op::HashIncr(_, f, 5) if f == "tenant:a:completion"))
        );
        let bucket = latency_bucket(250);
        assert!(tok.iter().any(
            |op| matches!(op, Op::HashIncr(_, f, 1) if *f == format!("model:llama:lat:{bucket}"))
        ));
        let dm = find(&ops, &keys.device_minute(0, "d", 0));
        assert!(dm.iter().any(
            |op| matches!(op, Op::HashIncrFloat(_, f, v) if f == "metric:fan.sum" && *v == 3.0)
        ));
        assert!(
            dm.iter()
                .any(|op| matches!(op, Op::HashSet(_, f, v) if f == "metric:fan.unit" && v == "1"))
        );
        let top = find(&ops, &keys.top(0, "tokens", 0));
        assert!(
            top.iter()
                .any(|op| matches!(op, Op::ZIncr(_, m, v) if m == "d" && *v == 15.0))
        );
    }
}
