//! Reading the worker's hashes and merging them: pure functions over the
//! field lists the store returns, so every figure is unit-tested here.
//!
//! Every field name comes from [`testbed_stream::aggregates`], the schema
//! the worker (`services/worker/src/fold.rs`) writes with: counts are
//! integers, sums, minima and maxima are `f64` text.

use std::collections::{BTreeMap, HashMap};

use testbed_proto::v1::{
    Device, DeviceStats, GpuStats, MetricStats, MinuteBucket, Summary, TokenStats, TopMetric,
};
use testbed_stream::aggregates::{device_minute, device_state, run as ledger, tokens};

use crate::error::QueryError;
use crate::percentiles::Histogram;
use crate::time::{minute_start, timestamp_ms};

/// The fields of one stored hash (sorted by name, as the store returns
/// them), with the key for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    key: &'a str,
    fields: &'a [(String, String)],
}

impl<'a> Fields<'a> {
    /// The hash `fields` read from `key`.
    pub fn new(key: &'a str, fields: &'a [(String, String)]) -> Self {
        Self { key, fields }
    }

    /// Whether the hash is missing or empty.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Every field and value.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.fields.iter().map(|(f, v)| (f.as_str(), v.as_str()))
    }

    /// The raw value of `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .binary_search_by(|(f, _)| f.as_str().cmp(name))
            .ok()
            .and_then(|i| self.fields.get(i))
            .map(|(_, v)| v.as_str())
    }

    /// An integer counter; 0 when missing.
    pub fn count(&self, name: &str) -> Result<u64, QueryError> {
        self.get(name).map_or(Ok(0), |v| self.parse_count(name, v))
    }

    /// A float; `None` when missing.
    pub fn float(&self, name: &str) -> Result<Option<f64>, QueryError> {
        self.get(name)
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| QueryError::corrupt(self.key, name, v))
            })
            .transpose()
    }

    fn parse_count(&self, name: &str, value: &str) -> Result<u64, QueryError> {
        value
            .parse::<u64>()
            .map_err(|_| QueryError::corrupt(self.key, name, value))
    }
}

/// Count, sum, min and max of a value, mergeable.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Acc {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Acc {
    /// Reads the summary field `name` (`count sum min max`, see
    /// [`testbed_stream::summary_text`]); empty when missing.
    pub fn read(hash: &Fields<'_>, name: &str) -> Result<Self, QueryError> {
        let Some(text) = hash.get(name) else {
            return Ok(Self::default());
        };
        let [count, sum, min, max] = testbed_stream::parse_summary(text)
            .filter(|s| s[0] >= 0.0 && s[0].fract() == 0.0)
            .ok_or_else(|| QueryError::corrupt(hash.key, name, text))?;
        if count == 0.0 {
            return Ok(Self::default());
        }
        Ok(Self {
            count: count as u64,
            sum,
            min,
            max,
        })
    }

    /// Adds `other`'s values.
    pub fn merge(&mut self, other: &Acc) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// As the proto's summary: mean = sum / count, all zero when empty.
    pub fn summary(&self) -> Summary {
        if self.count == 0 {
            return Summary::default();
        }
        Summary {
            count: self.count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            mean: self.sum / self.count as f64,
        }
    }
}

/// One metric name's unit and values.
#[derive(Debug, Clone, Default, PartialEq)]
struct MetricAcc {
    unit: String,
    value: Acc,
}

/// A device's statistics over one or more minutes, mergeable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceAcc {
    events: u64,
    gpu: u64,
    util: Acc,
    mem: Acc,
    temp: Acc,
    power: Acc,
    tokens: u64,
    prompt: u64,
    completion: u64,
    latency: Acc,
    metrics: BTreeMap<String, MetricAcc>,
}

impl DeviceAcc {
    /// Reads one `device_minute` hash.
    pub fn read(hash: &Fields<'_>) -> Result<Self, QueryError> {
        let mut metrics: BTreeMap<String, MetricAcc> = BTreeMap::new();
        for (field, value) in hash.iter() {
            // `metric:<name>` (the summary) and `unit:<name>`.
            if let Some(name) = device_minute::metric_of(field) {
                metrics.entry(name.to_owned()).or_default().value = Acc::read(hash, field)?;
            } else if let Some(name) = device_minute::unit_of(field) {
                metrics.entry(name.to_owned()).or_default().unit = value.to_owned();
            }
        }
        Ok(Self {
            events: hash.count(device_minute::EVENTS)?,
            gpu: hash.count(device_minute::GPU_COUNT)?,
            util: Acc::read(hash, device_minute::GPU_UTIL)?,
            mem: Acc::read(hash, device_minute::GPU_MEM)?,
            temp: Acc::read(hash, device_minute::GPU_TEMP)?,
            power: Acc::read(hash, device_minute::GPU_POWER)?,
            tokens: hash.count(device_minute::TOKENS_COUNT)?,
            prompt: hash.count(device_minute::PROMPT_TOKENS)?,
            completion: hash.count(device_minute::COMPLETION_TOKENS)?,
            latency: Acc::read(hash, device_minute::TOKENS_LATENCY)?,
            metrics,
        })
    }

    /// Adds a later minute: counts add up, and a metric's unit is the
    /// latest minute's.
    pub fn merge(&mut self, later: &DeviceAcc) {
        self.events += later.events;
        self.gpu += later.gpu;
        self.util.merge(&later.util);
        self.mem.merge(&later.mem);
        self.temp.merge(&later.temp);
        self.power.merge(&later.power);
        self.tokens += later.tokens;
        self.prompt += later.prompt;
        self.completion += later.completion;
        self.latency.merge(&later.latency);
        for (name, m) in &later.metrics {
            let entry = self.metrics.entry(name.clone()).or_default();
            entry.value.merge(&m.value);
            if !m.unit.is_empty() {
                entry.unit.clone_from(&m.unit);
            }
        }
    }

    fn gpu_stats(&self) -> GpuStats {
        GpuStats {
            count: self.gpu,
            utilization: Some(self.util.summary()),
            memory_used_bytes: Some(self.mem.summary()),
            temperature_celsius: Some(self.temp.summary()),
            power_watts: Some(self.power.summary()),
        }
    }

    fn token_stats(&self) -> TokenStats {
        TokenStats {
            count: self.tokens,
            prompt_tokens: self.prompt,
            completion_tokens: self.completion,
            latency: Some(self.latency.summary()),
        }
    }

    fn metric_stats(&self) -> Vec<MetricStats> {
        self.metrics
            .iter()
            .map(|(name, m)| MetricStats {
                name: name.clone(),
                unit: m.unit.clone(),
                value: Some(m.value.summary()),
            })
            .collect()
    }

    /// What `TopDevices` ranks the device by for `metric`: the sum of its
    /// events or tokens, the mean of a GPU metric; `None` without data for
    /// it (or for `Unspecified`).
    pub fn rank_value(&self, metric: TopMetric) -> Option<f64> {
        let mean = |acc: &Acc| (acc.count > 0).then(|| acc.sum / acc.count as f64);
        match metric {
            TopMetric::EventCount => (self.events > 0).then_some(self.events as f64),
            TopMetric::Tokens => {
                (self.tokens > 0).then_some((self.prompt + self.completion) as f64)
            }
            TopMetric::GpuUtilization => mean(&self.util),
            TopMetric::GpuPower => mean(&self.power),
            TopMetric::GpuTemperature => mean(&self.temp),
            TopMetric::Unspecified => None,
        }
    }

    /// As window totals.
    pub fn stats(&self) -> DeviceStats {
        DeviceStats {
            event_count: self.events,
            gpu: Some(self.gpu_stats()),
            tokens: Some(self.token_stats()),
            metrics: self.metric_stats(),
        }
    }

    /// As the bucket of Unix minute `minute`.
    pub fn bucket(&self, minute: i64) -> MinuteBucket {
        MinuteBucket {
            start_time: Some(minute_start(minute)),
            event_count: self.events,
            gpu: Some(self.gpu_stats()),
            tokens: Some(self.token_stats()),
            metrics: self.metric_stats(),
        }
    }
}

/// A device from its state hash (`seen` Unix ms, `labels` JSON object);
/// `None` when the hash is missing (never seen, or expired).
pub fn device(id: &str, hash: &Fields<'_>) -> Result<Option<Device>, QueryError> {
    if hash.is_empty() {
        return Ok(None);
    }
    let labels: HashMap<String, String> = match hash.get(device_state::LABELS) {
        None => HashMap::new(),
        Some(json) => serde_json::from_str(json)
            .map_err(|_| QueryError::corrupt(hash.key, device_state::LABELS, json))?,
    };
    let last_seen_time = hash
        .float(device_state::SEEN)?
        .map(|ms| timestamp_ms(ms.floor() as i64));
    Ok(Some(Device {
        device_id: id.to_owned(),
        labels,
        last_seen_time,
    }))
}

/// One model's or tenant's token usage, mergeable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenGroupAcc {
    /// Token usage records.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt: u64,
    /// Completion tokens.
    pub completion: u64,
    /// Request latency histogram.
    pub latency: Histogram,
}

/// Adds one `tokens_minute` hash's groups under `prefix` (`model` or
/// `tenant`) to `groups`. Fields: `<prefix>:<key>:n|prompt|completion` and
/// `<prefix>:<key>:lat:<bucket>`; the key may itself hold colons.
pub fn add_token_groups(
    hash: &Fields<'_>,
    prefix: &str,
    groups: &mut BTreeMap<String, TokenGroupAcc>,
) -> Result<(), QueryError> {
    let prefix = format!("{prefix}:");
    for (field, value) in hash.iter() {
        let Some((head, tail)) = field
            .strip_prefix(prefix.as_str())
            .and_then(|rest| rest.rsplit_once(':'))
        else {
            continue;
        };
        let count = || hash.parse_count(field, value);
        match tail {
            tokens::REQUESTS => groups.entry(head.to_owned()).or_default().requests += count()?,
            tokens::PROMPT => groups.entry(head.to_owned()).or_default().prompt += count()?,
            tokens::COMPLETION => groups.entry(head.to_owned()).or_default().completion += count()?,
            bucket => {
                let latency = head
                    .rsplit_once(':')
                    .filter(|(_, part)| *part == tokens::LATENCY)
                    .map(|(key, _)| key);
                let (Some(key), Ok(bucket)) = (latency, bucket.parse::<u32>()) else {
                    // Some other field (such as a future `lat.sum`): not ours.
                    continue;
                };
                groups
                    .entry(key.to_owned())
                    .or_default()
                    .latency
                    .add(bucket, count()?);
            }
        }
    }
    Ok(())
}

/// Adds an end-to-end histogram hash (bucket -> count) to `hist`.
pub fn add_histogram(hash: &Fields<'_>, hist: &mut Histogram) -> Result<(), QueryError> {
    for (field, value) in hash.iter() {
        let bucket = field
            .parse::<u32>()
            .map_err(|_| QueryError::corrupt(hash.key, field, value))?;
        hist.add(bucket, hash.parse_count(field, value)?);
    }
    Ok(())
}

/// A run's delivery ledger summed over partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunAcc {
    /// Events processed, all kinds.
    pub processed: u64,
    /// Of them, GPU samples.
    pub gpu: u64,
    /// Of them, token usage records.
    pub tokens: u64,
    /// Of them, metrics.
    pub metric: u64,
    /// Re-sent events of the run dropped as duplicates at append.
    pub duplicates: u64,
    /// Events of the run dead-lettered.
    pub dead_lettered: u64,
    /// Earliest `observed_at` of the run's events, Unix ms.
    pub first_event_ms: Option<f64>,
    /// Latest time one of its entries was applied, Unix ms (workers' clocks).
    pub last_processed_ms: Option<f64>,
}

impl RunAcc {
    /// Adds one partition's `run` hash.
    pub fn add(&mut self, hash: &Fields<'_>) -> Result<(), QueryError> {
        self.processed += hash.count(ledger::PROCESSED)?;
        self.gpu += hash.count(ledger::GPU)?;
        self.tokens += hash.count(ledger::TOKENS)?;
        self.metric += hash.count(ledger::METRIC)?;
        self.duplicates += hash.count(ledger::DUPLICATES)?;
        self.dead_lettered += hash.count(ledger::DEAD_LETTERED)?;
        if let Some(first) = hash.float(ledger::FIRST_EVENT_MS)? {
            self.first_event_ms = Some(self.first_event_ms.map_or(first, |f| f.min(first)));
        }
        if let Some(last) = hash.float(ledger::LAST_PROCESSED_MS)? {
            self.last_processed_ms = Some(self.last_processed_ms.map_or(last, |l| l.max(last)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pairs
            .iter()
            .map(|(f, v)| ((*f).to_owned(), (*v).to_owned()))
            .collect();
        v.sort();
        v
    }

    fn minute_one() -> Vec<(String, String)> {
        hash(&[
            ("n", "4"),
            ("gpu.n", "2"),
            ("gpu.util", "2 1 0.25 0.75"),
            ("tok.n", "1"),
            ("tok.prompt", "10"),
            ("tok.completion", "5"),
            ("tok.lat", "1 0.5 0.5 0.5"),
            ("metric.n", "1"),
            ("metric:fan.speed", "1 3 3 3"),
            ("unit:fan.speed", "rpm"),
        ])
    }

    fn minute_two() -> Vec<(String, String)> {
        hash(&[
            ("n", "2"),
            ("gpu.n", "1"),
            ("gpu.util", "1 0.5 0.5 0.5"),
            ("metric.n", "1"),
            ("metric:fan.speed", "1 9 9 9"),
            ("unit:fan.speed", "krpm"),
        ])
    }

    /// Rankings over merged minutes: sums for events and tokens, means
    /// (sum / samples) for GPU metrics, and nothing for a metric a device
    /// has no data for.
    #[test]
    fn rank_values() {
        let mut acc = DeviceAcc::read(&Fields::new("k1", &minute_one())).unwrap();
        acc.merge(&DeviceAcc::read(&Fields::new("k2", &minute_two())).unwrap());
        assert_eq!(acc.rank_value(TopMetric::EventCount), Some(6.0));
        assert_eq!(acc.rank_value(TopMetric::Tokens), Some(15.0));
        assert_eq!(acc.rank_value(TopMetric::GpuUtilization), Some(0.5));
        assert_eq!(acc.rank_value(TopMetric::GpuPower), None);
        assert_eq!(acc.rank_value(TopMetric::Unspecified), None);
        let gpu_only = DeviceAcc::read(&Fields::new("k2", &minute_two())).unwrap();
        assert_eq!(gpu_only.rank_value(TopMetric::Tokens), None);
        let hot = hash(&[("n", "1"), ("gpu.n", "1"), ("gpu.temp", "1 80 80 80")]);
        let hot = DeviceAcc::read(&Fields::new("k3", &hot)).unwrap();
        assert_eq!(hot.rank_value(TopMetric::GpuTemperature), Some(80.0));
    }

    /// Two minutes merge into exact totals; metric names may hold dots and
    /// keep the latest unit.
    #[test]
    fn device_minutes_merge() {
        let (one, two) = (minute_one(), minute_two());
        let mut acc = DeviceAcc::read(&Fields::new("k1", &one)).unwrap();
        let bucket = acc.bucket(7);
        assert_eq!(bucket.start_time.unwrap().seconds, 420);
        assert_eq!(bucket.event_count, 4);
        acc.merge(&DeviceAcc::read(&Fields::new("k2", &two)).unwrap());
        let stats = acc.stats();
        assert_eq!(stats.event_count, 6);
        let gpu = stats.gpu.unwrap();
        assert_eq!(gpu.count, 3);
        assert_eq!(
            gpu.utilization.unwrap(),
            Summary {
                count: 3,
                sum: 1.5,
                min: 0.25,
                max: 0.75,
                mean: 0.5
            }
        );
        assert_eq!(gpu.power_watts.unwrap(), Summary::default());
        let tokens = stats.tokens.unwrap();
        assert_eq!(
            (tokens.count, tokens.prompt_tokens, tokens.completion_tokens),
            (1, 10, 5)
        );
        assert_eq!(tokens.latency.unwrap().mean, 0.5);
        assert_eq!(
            stats.metrics,
            vec![MetricStats {
                name: "fan.speed".into(),
                unit: "krpm".into(),
                value: Some(Summary {
                    count: 2,
                    sum: 12.0,
                    min: 3.0,
                    max: 9.0,
                    mean: 6.0
                }),
            }]
        );
    }

    /// Unreadable numbers are store errors (INTERNAL), not zeros.
    #[test]
    fn corrupt_values_are_errors() {
        let bad = hash(&[("n", "many")]);
        let err = DeviceAcc::read(&Fields::new("k", &bad)).unwrap_err();
        assert!(matches!(err, QueryError::Store(_)), "{err:?}");
        for summary in ["1 2 3", "1 2 3 4 5", "1.5 2 3 4", "-1 2 3 4", "a b c d"] {
            let bad = hash(&[("gpu.util", summary)]);
            let err = DeviceAcc::read(&Fields::new("k", &bad)).unwrap_err();
            assert!(matches!(err, QueryError::Store(_)), "{summary}: {err:?}");
        }
    }

    /// The state hash gives labels and the last-seen time; a missing hash
    /// is no device.
    #[test]
    fn device_state() {
        let h = hash(&[
            ("seen", "1763780000123"),
            ("labels", r#"{"arch":"arm64","zone":"eu-1"}"#),
        ]);
        let d = device("d1", &Fields::new("k", &h)).unwrap().unwrap();
        assert_eq!(d.labels.get("arch").map(String::as_str), Some("arm64"));
        assert_eq!(d.labels.len(), 2);
        let seen = d.last_seen_time.unwrap();
        assert_eq!((seen.seconds, seen.nanos), (1_763_780_000, 123_000_000));
        assert_eq!(device("d1", &Fields::new("k", &[])).unwrap(), None);
        let no_labels = hash(&[("seen", "60000")]);
        let d = device("d1", &Fields::new("k", &no_labels))
            .unwrap()
            .unwrap();
        assert!(d.labels.is_empty());
        let bad = hash(&[("seen", "1"), ("labels", "[1]")]);
        assert!(device("d1", &Fields::new("k", &bad)).is_err());
    }

    /// Token fields group by model or tenant; keys may hold colons.
    #[test]
    fn token_groups() {
        let h = hash(&[
            ("model:llama:n", "2"),
            ("model:llama:prompt", "30"),
            ("model:llama:completion", "12"),
            ("model:llama:lat:17", "2"),
            ("model:org:m:n", "1"),
            ("model:org:m:lat:3", "1"),
            ("model:org:m:lat.sum", "0.02"),
            ("tenant:a:n", "3"),
        ]);
        let mut groups = BTreeMap::new();
        add_token_groups(&Fields::new("k", &h), "model", &mut groups).unwrap();
        add_token_groups(&Fields::new("k", &h), "model", &mut groups).unwrap();
        assert_eq!(groups.keys().collect::<Vec<_>>(), ["llama", "org:m"]);
        let llama = &groups["llama"];
        assert_eq!(
            (llama.requests, llama.prompt, llama.completion),
            (4, 60, 24)
        );
        assert_eq!(llama.latency.total(), 4);
        assert_eq!(groups["org:m"].requests, 2);
        assert_eq!(groups["org:m"].latency.total(), 2);
        let mut tenants = BTreeMap::new();
        add_token_groups(&Fields::new("k", &h), "tenant", &mut tenants).unwrap();
        assert_eq!(tenants["a"].requests, 3);
    }

    /// End-to-end hashes add into one histogram; run ledgers add up.
    #[test]
    fn histograms_and_runs() {
        let mut hist = Histogram::default();
        add_histogram(
            &Fields::new("k", &hash(&[("3", "2"), ("7", "1")])),
            &mut hist,
        )
        .unwrap();
        add_histogram(&Fields::new("k", &hash(&[("3", "1")])), &mut hist).unwrap();
        assert_eq!(hist.total(), 4);
        assert!(add_histogram(&Fields::new("k", &hash(&[("x", "1")])), &mut hist).is_err());

        let mut run = RunAcc::default();
        run.add(&Fields::new(
            "k",
            &hash(&[("processed", "3"), ("gpu", "3")]),
        ))
        .unwrap();
        run.add(&Fields::new(
            "k",
            &hash(&[("processed", "2"), ("tokens", "1"), ("metric", "1")]),
        ))
        .unwrap();
        assert_eq!(
            run,
            RunAcc {
                processed: 5,
                gpu: 3,
                tokens: 1,
                metric: 1,
                duplicates: 0,
                dead_lettered: 0,
                first_event_ms: None,
                last_processed_ms: None,
            }
        );
    }
}
