//! Folding a batch of entries into aggregate writes.
//!
//! The events of every entry of one apply become per-key deltas in Rust
//! (sums and counts added up, minima and maxima taken) before one atomic
//! apply, so the cost in the store is per distinct key, not per event: the
//! more entries a worker finds waiting, the more each write carries.
//!
//! Events are read in place as [`EventRef`]s: their text stays a slice of
//! the entry's one buffer and nothing is allocated per event (decoding into
//! `Event` allocated a `String` per text field and a hashed map of labels,
//! most of the worker's CPU; prost views of `Bytes` fields still cost a
//! reference count per field and a vector of labels). Each event is read
//! once: [`Folder::add_checked`] checks it (decoding and the UTF-8 check of
//! its text) as it folds it, and adds an entry only if every event passes;
//! an entry that does not is dead-lettered with [`entry_check`]'s reason.
//! Accumulators borrow the text as bytes (device ids, run
//! ids, metric names), which becomes `str` once per distinct key; a
//! device's labels are read once per apply; key and field names are
//! formatted once per distinct key at the end, so folding allocates per
//! key, not per event.

use std::collections::BTreeMap;

/// The fold's maps, hashed several times per event: foldhash (hashbrown's
/// default hasher, seeded per process) instead of std's SipHash, which
/// showed up in profiles. One fold lives for one batch of at most
/// `--apply-max-events` events, which bounds what colliding ids could cost.
type FastMap<K, V> = foldhash::HashMap<K, V>;
use std::time::Duration;

use prost::bytes::Bytes;
use testbed_proto::raw::{EventRef, Labels, PayloadRef};
use testbed_stream::aggregates::{device_minute, device_state, run as ledger, tokens, top};
use testbed_stream::keys::Keys;
use testbed_stream::{Entry, Op, Ops, latency_bucket};

use crate::indexed::Indexed;

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

    fn add(slot: &mut Option<Self>, v: f64) {
        match slot {
            Some(s) => {
                s.n += 1;
                s.sum += v;
                s.min = s.min.min(v);
                s.max = s.max.max(v);
            }
            None => *slot = Some(Self::of(v)),
        }
    }

    fn push(self, ops: &mut Ops, k: u16, field: String) {
        ops.push(Op::HashSummary(
            k,
            field,
            [self.n as f64, self.sum, self.min, self.max],
        ));
    }
}

/// A metric's figures in one device-minute.
#[derive(Debug)]
struct MetricAcc<'a> {
    name: &'a [u8],
    unit: &'a [u8],
    summary: Option<Summary>,
}

/// The deltas of one device-minute hash.
#[derive(Debug, Default)]
struct DeviceMinute<'a> {
    events: i64,
    gpu: i64,
    tokens: i64,
    prompt: i64,
    completion: i64,
    metrics: i64,
    gpu_util: Option<Summary>,
    gpu_mem: Option<Summary>,
    gpu_temp: Option<Summary>,
    gpu_power: Option<Summary>,
    tok_lat: Option<Summary>,
    /// Few names per device: a linear search beats hashing.
    named: Vec<MetricAcc<'a>>,
}

/// One model's or tenant's token figures in one minute.
#[derive(Debug, Default)]
struct TokenGroup {
    n: i64,
    prompt: i64,
    completion: i64,
    latency: BTreeMap<u32, i64>,
}

/// A device's last-seen time is kept to the second (rounded down): it
/// then moves once a second, and the applies in between leave the device
/// states and the devices index as they were (an unchanged value is not
/// sent to Redis), where every apply used to rewrite all of them.
const SEEN_RESOLUTION_MS: f64 = 1000.0;

/// `ms` rounded down to [`SEEN_RESOLUTION_MS`].
fn seen(ms: f64) -> f64 {
    (ms / SEEN_RESOLUTION_MS).floor() * SEEN_RESOLUTION_MS
}

/// A device's last-seen time and labels.
#[derive(Debug)]
struct DeviceAcc<'a> {
    seen_ms: f64,
    labels: Option<Labels<'a>>,
}

/// A simulator run's delivery-ledger figures.
#[derive(Debug, Default)]
struct RunAcc {
    processed: i64,
    gpu: i64,
    tokens: i64,
    metric: i64,
    none: i64,
    first_ms: Option<f64>,
    /// Events per entry of the batch, for the run's latency histogram.
    per_entry: Vec<(u32, u64)>,
}

/// Folds entries of one partition into one [`Ops`].
#[derive(Debug)]
pub struct Folder<'a> {
    partition: u32,
    keys: &'a Keys,
    retention: Duration,
    device_minutes: FastMap<(&'a [u8], i64), DeviceMinute<'a>>,
    token_groups: FastMap<(i64, bool, &'a [u8]), TokenGroup>,
    devices: FastMap<&'a [u8], DeviceAcc<'a>>,
    runs: FastMap<&'a [u8], RunAcc>,
    /// (entry index, append minute, events) of every entry.
    entries: Vec<(u32, i64, u64)>,
    events: u64,
    /// The events of the entry being added, read once and checked before
    /// any is folded (reused from entry to entry).
    scratch: Vec<EventRef<'a>>,
}

/// Text the fold keeps as bytes: [`check`] has found it UTF-8.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// Reads one encoded event of an entry and checks that every text field
/// the fold reads is UTF-8 (ingest validated it; an entry that fails here
/// was not written by ingest and is dead-lettered).
pub fn check(bytes: &[u8]) -> Result<(), String> {
    checked(bytes).map(|_| ())
}

/// [`check`], keeping what was read.
fn checked(bytes: &[u8]) -> Result<EventRef<'_>, String> {
    let event = EventRef::decode(bytes).map_err(|e| e.to_string())?;
    match not_utf8(&event) {
        Some(field) => Err(format!("{field} is not UTF-8 text")),
        None => Ok(event),
    }
}

/// Why an entry whose events are `events` cannot be folded (the first
/// event that fails [`check`]), if one fails: the reason it is
/// dead-lettered with.
pub fn entry_check(events: &[Bytes]) -> Result<(), String> {
    events
        .iter()
        .enumerate()
        .try_for_each(|(i, bytes)| check(bytes).map_err(|e| undecodable(i, &e)))
}

fn undecodable(i: usize, reason: &str) -> String {
    format!("undecodable event {i}: {reason}")
}

/// The events of an entry that read, in order: all of them once
/// [`check`] has passed each (reading is a pure function of the bytes).
fn events_of(events: &[Bytes]) -> impl Iterator<Item = EventRef<'_>> {
    events
        .iter()
        .filter_map(|bytes| EventRef::decode(bytes).ok())
}

/// The first text field of `event` the fold reads that is not UTF-8.
fn not_utf8(event: &EventRef<'_>) -> Option<&'static str> {
    let bad = |b: &[u8]| std::str::from_utf8(b).is_err();
    if bad(event.device_id) {
        return Some("device_id");
    }
    if bad(event.run_id) {
        return Some("run_id");
    }
    match event.payload {
        Some(PayloadRef::Tokens(t)) if bad(t.model) || bad(t.tenant) => return Some("tokens"),
        Some(PayloadRef::Metric(m)) if bad(m.name) || bad(m.unit) => return Some("metric"),
        _ => {}
    }
    event
        .labels
        .iter()
        .any(|(key, value)| bad(key) || bad(value))
        .then_some("labels")
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

impl<'a> Folder<'a> {
    /// An empty fold for `partition`.
    pub fn new(partition: u32, keys: &'a Keys, retention: Duration) -> Self {
        Self {
            partition,
            keys,
            retention,
            device_minutes: FastMap::default(),
            token_groups: FastMap::default(),
            devices: FastMap::default(),
            runs: FastMap::default(),
            entries: Vec::new(),
            events: 0,
            scratch: Vec::new(),
        }
    }

    /// Events folded so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Adds the encoded `events` of `entry` (each passed [`check`]), the
    /// batch's entry number `index`.
    pub fn add(&mut self, index: u32, entry: &Entry, events: &'a [Bytes]) {
        self.add_entry(index, entry, events.len());
        for event in events_of(events) {
            self.add_event(index, event);
        }
    }

    /// [`Self::add`] of an entry whose events have not been checked:
    /// reads each once, and folds them only if every one passes [`check`];
    /// otherwise nothing is added and the error is [`entry_check`]'s.
    /// (Checking as the entry arrived, then folding, read every event
    /// twice: a fifth of the worker's CPU.)
    pub fn add_checked(
        &mut self,
        index: u32,
        entry: &Entry,
        events: &'a [Bytes],
    ) -> Result<(), String> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let read = events.iter().enumerate().try_for_each(|(i, bytes)| {
            scratch.push(checked(bytes).map_err(|e| undecodable(i, &e))?);
            Ok(())
        });
        if read.is_ok() {
            self.add_entry(index, entry, events.len());
            for event in scratch.drain(..) {
                self.add_event(index, event);
            }
        }
        scratch.clear();
        self.scratch = scratch;
        read
    }

    fn add_entry(&mut self, index: u32, entry: &Entry, events: usize) {
        self.entries
            .push((index, (entry.appended_ms() / 60_000) as i64, events as u64));
        self.events += events as u64;
    }

    fn add_event(&mut self, index: u32, event: EventRef<'a>) {
        let device = event.device_id;
        let minute = minute_of(event.observed_at.as_ref());
        let observed_ms = millis_of(event.observed_at.as_ref());
        let dm = self.device_minutes.entry((device, minute)).or_default();
        dm.events += 1;
        match event.payload {
            Some(PayloadRef::Gpu(g)) => {
                dm.gpu += 1;
                Summary::add(&mut dm.gpu_util, g.utilization);
                Summary::add(&mut dm.gpu_mem, g.memory_used_bytes as f64);
                Summary::add(&mut dm.gpu_temp, g.temperature_celsius);
                Summary::add(&mut dm.gpu_power, g.power_watts);
            }
            Some(PayloadRef::Tokens(t)) => {
                let latency = seconds_of(t.latency.as_ref());
                dm.tokens += 1;
                dm.prompt += t.prompt_tokens as i64;
                dm.completion += t.completion_tokens as i64;
                Summary::add(&mut dm.tok_lat, latency);
                let bucket = latency_bucket((latency * 1000.0) as u64);
                for (is_model, name) in [(true, t.model), (false, t.tenant)] {
                    let group = self
                        .token_groups
                        .entry((minute, is_model, name))
                        .or_default();
                    group.n += 1;
                    group.prompt += t.prompt_tokens as i64;
                    group.completion += t.completion_tokens as i64;
                    *group.latency.entry(bucket).or_default() += 1;
                }
            }
            Some(PayloadRef::Metric(m)) => {
                dm.metrics += 1;
                let (name, unit) = (m.name, m.unit);
                let acc = match dm.named.iter_mut().position(|a| a.name == name) {
                    Some(i) => &mut dm.named[i],
                    None => {
                        dm.named.push(MetricAcc {
                            name,
                            unit,
                            summary: None,
                        });
                        let last = dm.named.len() - 1;
                        &mut dm.named[last]
                    }
                };
                acc.unit = unit;
                Summary::add(&mut acc.summary, m.value);
            }
            // Validated at ingest; an event without payload is still counted.
            None => {}
        }
        let labels = (!event.labels.is_empty()).then_some(event.labels);
        self.devices
            .entry(device)
            .and_modify(|d| {
                d.seen_ms = d.seen_ms.max(observed_ms);
                if labels.is_some() {
                    d.labels = labels;
                }
            })
            .or_insert(DeviceAcc {
                seen_ms: observed_ms,
                labels,
            });
        if !event.run_id.is_empty() {
            let run = self.runs.entry(event.run_id).or_default();
            run.processed += 1;
            match event.payload {
                Some(PayloadRef::Gpu(_)) => run.gpu += 1,
                Some(PayloadRef::Tokens(_)) => run.tokens += 1,
                Some(PayloadRef::Metric(_)) => run.metric += 1,
                None => run.none += 1,
            }
            run.first_ms = Some(run.first_ms.map_or(observed_ms, |f| f.min(observed_ms)));
            match run.per_entry.last_mut() {
                Some((i, n)) if *i == index => *n += 1,
                _ => run.per_entry.push((index, 1)),
            }
        }
    }

    /// The writes of everything added.
    pub fn finish(self) -> Ops {
        self.finish_with(None).0
    }

    /// [`Self::finish`], leaving out the index writes of devices `cache`
    /// knows written with the same labels; also the (device, labels hash)
    /// whose index writes are in, to record in `cache` once applied.
    pub fn finish_with(self, cache: Option<&Indexed>) -> (Ops, Vec<(String, u64)>) {
        let now = std::time::Instant::now();
        let mut indexed = Vec::new();
        let p = self.partition;
        let keys = self.keys;
        let ttl = self.retention.as_secs().max(1);
        let mut ops = Ops::default();
        // The rankings' keys, one per (minute, metric) of the batch.
        let mut top_keys: FastMap<(i64, &'static str), u16> = FastMap::default();
        for ((device, minute), dm) in self.device_minutes {
            let k = ops.key(keys.device_minute(p, text(device), minute));
            push_rankings(&mut ops, &mut top_keys, keys, p, text(device), minute, &dm);
            // A counter appears once its kind of event has.
            for (field, by, present) in [
                (device_minute::EVENTS, dm.events, true),
                (device_minute::GPU_COUNT, dm.gpu, dm.gpu > 0),
                (device_minute::TOKENS_COUNT, dm.tokens, dm.tokens > 0),
                (device_minute::PROMPT_TOKENS, dm.prompt, dm.tokens > 0),
                (
                    device_minute::COMPLETION_TOKENS,
                    dm.completion,
                    dm.tokens > 0,
                ),
                (device_minute::METRIC_COUNT, dm.metrics, dm.metrics > 0),
            ] {
                if present {
                    ops.push(Op::HashIncr(k, field.to_owned(), by));
                }
            }
            for (field, summary) in [
                (device_minute::GPU_UTIL, dm.gpu_util),
                (device_minute::GPU_MEM, dm.gpu_mem),
                (device_minute::GPU_TEMP, dm.gpu_temp),
                (device_minute::GPU_POWER, dm.gpu_power),
                (device_minute::TOKENS_LATENCY, dm.tok_lat),
            ] {
                if let Some(s) = summary {
                    s.push(&mut ops, k, field.to_owned());
                }
            }
            for m in dm.named {
                let name = text(m.name);
                if let Some(s) = m.summary {
                    s.push(&mut ops, k, device_minute::metric(name));
                }
                ops.push(Op::HashSet(
                    k,
                    device_minute::metric_unit(name),
                    text(m.unit).to_owned(),
                ));
            }
            ops.push(Op::Expire(k, ttl));
        }
        for k in top_keys.into_values() {
            ops.push(Op::Expire(k, ttl));
        }
        let mut token_keys: FastMap<i64, u16> = FastMap::default();
        for ((minute, is_model, name), g) in self.token_groups {
            let name = text(name);
            let k = *token_keys
                .entry(minute)
                .or_insert_with(|| ops.key(keys.tokens_minute(p, minute)));
            let kind = if is_model {
                tokens::MODEL
            } else {
                tokens::TENANT
            };
            let group = tokens::group(kind, name);
            for (counter, by) in [
                (tokens::REQUESTS, g.n),
                (tokens::PROMPT, g.prompt),
                (tokens::COMPLETION, g.completion),
            ] {
                ops.push(Op::HashIncr(k, tokens::counter(&group, counter), by));
            }
            for (bucket, n) in g.latency {
                ops.push(Op::HashIncr(k, tokens::latency_bucket(&group, bucket), n));
            }
        }
        for k in token_keys.into_values() {
            ops.push(Op::Expire(k, ttl));
        }
        let devices = ops.key(keys.devices(p));
        let ids = ops.key(keys.device_ids(p));
        for (device, acc) in self.devices {
            let device = text(device);
            let d = ops.key(keys.device(p, device));
            ops.push(Op::HashMax(
                d,
                device_state::SEEN.to_owned(),
                seen(acc.seen_ms),
            ));
            match acc.labels {
                Some(labels) => {
                    // As a map: the last of a key sent twice wins. A map of
                    // strings always serialises.
                    let labels: BTreeMap<&str, &str> = labels
                        .iter()
                        .map(|(key, value)| (text(key), text(value)))
                        .collect();
                    let json = serde_json::to_string(&labels).unwrap_or_else(|_| "{}".to_owned());
                    let hash = labels_hash(&json);
                    ops.push(Op::HashSet(d, device_state::LABELS.to_owned(), json));
                    if !cache.is_some_and(|c| c.is_fresh(device, Some(hash), now)) {
                        index_device(&mut ops, keys, p, ids, device, &labels);
                        indexed.push((device.to_owned(), hash));
                    }
                }
                None => {
                    if !cache.is_some_and(|c| c.is_fresh(device, None, now)) {
                        ops.push(Op::ZMax(ids, device.to_owned(), 0.0));
                    }
                }
            }
            ops.push(Op::Expire(d, ttl));
            ops.push(Op::ZMax(devices, device.to_owned(), seen(acc.seen_ms)));
        }
        for (index, minute, events) in self.entries {
            let e2e = ops.key(keys.e2e(p, minute));
            ops.e2e.push((e2e, index, events));
            ops.push(Op::Expire(e2e, ttl));
        }
        // The delivery ledger of each simulator run: counts, first event
        // time, last applied time (this worker's clock), and the run's own
        // latency histogram.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_millis() as f64);
        for (run_id, acc) in self.runs {
            let run_id = text(run_id);
            let run = ops.key(keys.run(p, run_id));
            for (field, by) in [
                (ledger::PROCESSED, acc.processed),
                (ledger::GPU, acc.gpu),
                (ledger::TOKENS, acc.tokens),
                (ledger::METRIC, acc.metric),
                (ledger::NONE, acc.none),
            ] {
                if by != 0 {
                    ops.push(Op::HashIncr(run, field.to_owned(), by));
                }
            }
            if let Some(first) = acc.first_ms {
                ops.push(Op::HashMin(
                    run,
                    ledger::FIRST_EVENT_MS.to_owned(),
                    first.floor(),
                ));
            }
            ops.push(Op::HashMax(
                run,
                ledger::LAST_PROCESSED_MS.to_owned(),
                now_ms,
            ));
            ops.push(Op::Expire(run, ttl));
            let hist = ops.key(keys.run_e2e(p, run_id));
            for (index, n) in acc.per_entry {
                ops.e2e.push((hist, index, n));
            }
            ops.push(Op::Expire(hist, ttl));
        }
        (ops, indexed)
    }
}

/// The ranking writes of one device-minute ([`top`]): its events and
/// tokens added to the minute's sums, its GPU samples' maxima kept.
fn push_rankings(
    ops: &mut Ops,
    top_keys: &mut FastMap<(i64, &'static str), u16>,
    keys: &Keys,
    p: u32,
    device: &str,
    minute: i64,
    dm: &DeviceMinute<'_>,
) {
    let mut key = |metric: &'static str| {
        *top_keys
            .entry((minute, metric))
            .or_insert_with(|| ops.key(keys.top(p, metric, minute)))
    };
    let (events, tokens) = (key(top::EVENTS), (dm.tokens > 0).then(|| key(top::TOKENS)));
    let gpu = [
        (top::GPU_UTIL, dm.gpu_util),
        (top::GPU_POWER, dm.gpu_power),
        (top::GPU_TEMP, dm.gpu_temp),
    ]
    .map(|(metric, s)| s.map(|s| (key(metric), s.max)));
    ops.push(Op::ZIncr(events, device.to_owned(), dm.events as f64));
    if let Some(k) = tokens {
        ops.push(Op::ZIncr(
            k,
            device.to_owned(),
            (dm.prompt + dm.completion) as f64,
        ));
    }
    for (k, max) in gpu.into_iter().flatten() {
        ops.push(Op::ZMax(k, device.to_owned(), max));
    }
}

/// A hash of a device's labels (their JSON), to tell when they changed.
fn labels_hash(json: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    json.hash(&mut hasher);
    hasher.finish()
}

/// The index writes of `device`: the id index `ids` and the postings of
/// each of its label pairs (pruning the device takes it out of those of
/// the labels its state holds then). Score 0 and a member already there:
/// the merged apply finds nothing changed and sends nothing. A label whose
/// value changed leaves the device in the old pair's postings: readers
/// check the state's labels.
fn index_device(
    ops: &mut Ops,
    keys: &Keys,
    p: u32,
    ids: u16,
    device: &str,
    labels: &BTreeMap<&str, &str>,
) {
    ops.push(Op::ZMax(ids, device.to_owned(), 0.0));
    for (key, value) in labels {
        let k = ops.key(keys.label_devices(p, key, value));
        ops.push(Op::ZMax(k, device.to_owned(), 0.0));
    }
}

/// Builds the aggregate writes of one `entry`, whose decoded events are
/// `events` (a batch of one).
pub fn fold(entry: &Entry, events: &[Bytes], keys: &Keys, retention: Duration) -> Ops {
    let mut folder = Folder::new(entry.partition, keys, retention);
    folder.add(0, entry, events);
    folder.finish()
}

/// The writes that go with dead-lettering `entry`: each simulator run's
/// ledger counts its events as dead-lettered.
pub fn dead_letter_ops(entry: &Entry, events: &[Bytes], keys: &Keys, retention: Duration) -> Ops {
    let mut per_run: BTreeMap<&str, i64> = BTreeMap::new();
    for event in events_of(events).filter(|e| !e.run_id.is_empty()) {
        *per_run.entry(text(event.run_id)).or_default() += 1;
    }
    let mut ops = Ops::default();
    for (run_id, n) in per_run {
        let run = ops.key(keys.run(entry.partition, run_id));
        ops.push(Op::HashIncr(run, ledger::DEAD_LETTERED.to_owned(), n));
        ops.push(Op::Expire(run, retention.as_secs().max(1)));
    }
    ops
}

#[cfg(test)]
mod tests;
