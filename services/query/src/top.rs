//! TopDevices without a scan: the devices ranked highest by a metric over
//! a window, read from the rankings the worker keeps per partition and
//! minute ([`testbed_stream::aggregates::top`]), a few members of each.
//!
//! A call reads the top `depth` members (`--query-top-depth`, at least the
//! limit) of each partition's ranking of each minute of the window: one
//! bounded `ZRANGE ... LIMIT` per partition and minute. The members read
//! are the candidates; their exact values over the window are completed
//! from the rankings (`ZMSCORE`, sums) or their device-minute records
//! (means), and ranked as before (highest first, ties by id).
//!
//! # When the answer is exact
//! A device not read has, in each minute whose ranking was read whole (it
//! held fewer than `depth` members), no data; in each other minute, at
//! most the lowest score read there. That bounds its value over the
//! window: the sum of those lowest scores (events, tokens), or their
//! maximum (GPU means: a mean of samples is at most their highest, which
//! is what the GPU rankings hold). When the last device of the answer
//! scores at least that bound in every partition, no device left unread
//! can rank above it: the values are exact, and so is the order unless a
//! device left unread ties the last one (then another device of the same
//! value may show instead of the one with the lower id). A window of one
//! minute, or a fleet with fewer than `depth` devices per partition and
//! minute, is always exact; otherwise, past the bound, the answer is the
//! best of the candidates and the call logs that at debug level.

use std::collections::{HashMap, HashSet};

use testbed_proto::v1::{DeviceScore, TopDevicesResponse, TopMetric};
use testbed_stream::aggregates::top;

use crate::aggregate::{DeviceAcc, Fields};
use crate::error::QueryError;
use crate::store::Reader;
use crate::time::Window;

/// How a metric's per-minute scores make its value over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combine {
    /// The value is the sum of the minutes' scores.
    Sum,
    /// The value is a mean of samples; each minute's score is its highest.
    Max,
}

/// The ranking `metric` is read from, and how its scores combine.
fn ranking(metric: TopMetric) -> Option<(&'static str, Combine)> {
    match metric {
        TopMetric::EventCount => Some((top::EVENTS, Combine::Sum)),
        TopMetric::Tokens => Some((top::TOKENS, Combine::Sum)),
        TopMetric::GpuUtilization => Some((top::GPU_UTIL, Combine::Max)),
        TopMetric::GpuPower => Some((top::GPU_POWER, Combine::Max)),
        TopMetric::GpuTemperature => Some((top::GPU_TEMP, Combine::Max)),
        TopMetric::Unspecified => None,
    }
}

/// The members read from one partition's ranking of one minute.
#[derive(Debug)]
struct List {
    partition: u32,
    minute: i64,
    key: String,
    /// Highest first.
    members: Vec<(String, f64)>,
    /// Whether the ranking may hold more than was read.
    full: bool,
}

impl List {
    /// The score of `device` here, if it was read.
    fn score(&self, device: &str) -> Option<f64> {
        self.members
            .iter()
            .find(|(m, _)| m == device)
            .map(|(_, s)| *s)
    }

    /// The most a device not read scores here: the lowest score read when
    /// the ranking holds more, else nothing (a device with data here was
    /// read).
    fn floor(&self) -> Option<f64> {
        self.full
            .then(|| self.members.last().map(|(_, s)| *s))
            .flatten()
    }
}

/// The most a device that was not read can be worth over the window, the
/// highest over partitions; `None` when every ranking was read whole.
fn unread_bound(lists: &[List], combine: Combine) -> Option<f64> {
    let mut per_partition: HashMap<u32, f64> = HashMap::new();
    for list in lists {
        let Some(floor) = list.floor() else { continue };
        let bound = per_partition
            .entry(list.partition)
            .or_insert(match combine {
                Combine::Sum => 0.0,
                Combine::Max => f64::NEG_INFINITY,
            });
        *bound = match combine {
            Combine::Sum => *bound + floor,
            Combine::Max => bound.max(floor),
        };
    }
    per_partition.into_values().reduce(f64::max)
}

/// Each partition's candidates: the devices read, once each, by
/// partition.
fn candidates(lists: &[List]) -> HashMap<u32, Vec<String>> {
    let mut seen: HashSet<(u32, &str)> = HashSet::new();
    let mut out: HashMap<u32, Vec<String>> = HashMap::new();
    for list in lists {
        for (device, _) in &list.members {
            if seen.insert((list.partition, device)) {
                out.entry(list.partition).or_default().push(device.clone());
            }
        }
    }
    out
}

/// The `limit`-th highest of `values` (the lowest when fewer).
fn kth_highest(values: impl Iterator<Item = f64>, limit: usize) -> Option<f64> {
    let mut all: Vec<f64> = values.collect();
    all.sort_by(|a, b| b.total_cmp(a));
    all.get(limit.saturating_sub(1))
        .or_else(|| all.last())
        .copied()
}

/// Window sums of the candidates that can still rank among the first
/// `limit`: the scores read give each a floor (what was read) and a
/// ceiling (plus the lowest score of each full ranking it was not read
/// from); candidates whose ceiling is below the `limit`-th floor cannot
/// rank and are dropped, the others' missing scores are read.
async fn sums(
    reader: &Reader,
    lists: &[List],
    limit: usize,
) -> Result<HashMap<String, f64>, QueryError> {
    let by_partition = candidates(lists);
    // (partition, device) -> (floor, ceiling).
    let mut bounds: HashMap<(u32, &str), (f64, f64)> = HashMap::new();
    for (&p, devices) in &by_partition {
        for device in devices {
            let (mut floor, mut ceiling) = (0.0, 0.0);
            for list in lists.iter().filter(|l| l.partition == p) {
                match list.score(device) {
                    Some(s) => {
                        floor += s;
                        ceiling += s;
                    }
                    None => ceiling += list.floor().unwrap_or(0.0),
                }
            }
            bounds.insert((p, device.as_str()), (floor, ceiling));
        }
    }
    let cut = kth_highest(bounds.values().map(|(f, _)| *f), limit).unwrap_or(0.0);
    let survivors: HashMap<(u32, &str), f64> = bounds
        .into_iter()
        .filter(|(_, (_, ceiling))| *ceiling >= cut)
        .map(|(k, (floor, _))| (k, floor))
        .collect();
    let mut values: HashMap<(u32, &str), f64> = survivors;
    // The scores not read: only full rankings can hold them.
    let lookups: Vec<(String, Vec<String>)> = lists
        .iter()
        .filter(|l| l.full)
        .map(|l| {
            let missing: Vec<String> = values
                .keys()
                .filter(|(p, d)| *p == l.partition && l.score(d).is_none())
                .map(|(_, d)| (*d).to_owned())
                .collect();
            (l.key.clone(), missing)
        })
        .filter(|(_, missing)| !missing.is_empty())
        .collect();
    let partition_of: HashMap<&str, u32> = lists
        .iter()
        .map(|l| (l.key.as_str(), l.partition))
        .collect();
    for ((key, members), scores) in lookups.iter().zip(reader.scores(&lookups).await?) {
        let p = partition_of.get(key.as_str()).copied().unwrap_or_default();
        for (member, score) in members.iter().zip(scores) {
            if let (Some(s), Some(v)) = (score, values.get_mut(&(p, member.as_str()))) {
                *v += s;
            }
        }
    }
    Ok(values
        .into_iter()
        .map(|((_, d), v)| (d.to_owned(), v))
        .collect())
}

/// Window means of the candidates, from their device-minute records of
/// the minutes they may have data in (those whose ranking holds them or
/// was not read whole).
async fn means(
    reader: &Reader,
    metric: TopMetric,
    lists: &[List],
) -> Result<HashMap<String, f64>, QueryError> {
    let mut names: Vec<(String, String)> = Vec::new();
    for (p, devices) in candidates(lists) {
        for device in devices {
            for list in lists.iter().filter(|l| l.partition == p) {
                if list.full || list.score(&device).is_some() {
                    let key = reader.keys().device_minute(p, &device, list.minute);
                    names.push((device.clone(), key));
                }
            }
        }
    }
    let keys: Vec<String> = names.iter().map(|(_, k)| k.clone()).collect();
    let mut totals: HashMap<String, DeviceAcc> = HashMap::new();
    for ((device, key), hash) in names.into_iter().zip(reader.hashes(&keys).await?) {
        if hash.is_empty() {
            continue;
        }
        let acc = DeviceAcc::read(&Fields::new(&key, &hash))?;
        totals.entry(device).or_default().merge(&acc);
    }
    Ok(totals
        .into_iter()
        .filter_map(|(device, acc)| acc.rank_value(metric).map(|v| (device, v)))
        .collect())
}

/// Orders by value, highest first, ties by device id, and keeps `limit`.
fn rank(values: HashMap<String, f64>, limit: usize) -> Vec<(String, f64)> {
    let mut ranked: Vec<(String, f64)> = values.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(limit);
    ranked
}

/// Whether `ranked` (cut at `limit`) is exact given the `bound` of the
/// devices not read (see the module docs).
fn certified(ranked: &[(String, f64)], limit: usize, bound: Option<f64>) -> bool {
    match (bound, ranked.get(limit.saturating_sub(1))) {
        (None, _) => true,
        (Some(bound), Some((_, last))) => *last >= bound,
        (Some(_), None) => false,
    }
}

/// The `limit` devices with the highest `metric` over `window`: sums for
/// events and tokens, means (sum / samples) for the GPU metrics. Devices
/// without data for the metric are left out.
pub async fn top_devices(
    reader: &Reader,
    metric: TopMetric,
    window: Window,
    limit: usize,
) -> Result<TopDevicesResponse, QueryError> {
    let (ranked, exact) = ranked(reader, metric, window, limit).await?;
    if !exact {
        tracing::debug!(
            metric = metric.as_str_name(),
            depth = reader.top_depth(),
            "TopDevices answer not certified exact: devices not read may rank higher"
        );
    }
    let ids: Vec<String> = ranked.iter().map(|(id, _)| id.clone()).collect();
    let states = reader.devices(&ids).await?;
    let devices = ranked
        .into_iter()
        .zip(states)
        .map(|((device_id, value), state)| DeviceScore {
            device_id,
            value,
            labels: state.map(|d| d.labels).unwrap_or_default(),
        })
        .collect();
    Ok(TopDevicesResponse { devices })
}

/// The ranking of [`top_devices`], (device, value) highest first, and
/// whether it is certified exact (see the module docs).
async fn ranked(
    reader: &Reader,
    metric: TopMetric,
    window: Window,
    limit: usize,
) -> Result<(Vec<(String, f64)>, bool), QueryError> {
    let Some((name, combine)) = ranking(metric) else {
        return Err(QueryError::invalid("metric", "must be set"));
    };
    let depth = reader.top_depth().max(limit);
    let slots: Vec<(u32, i64, String)> = reader
        .partitions()
        .flat_map(|p| window.minutes().map(move |m| (p, m)))
        .map(|(p, m)| (p, m, reader.keys().top(p, name, m)))
        .collect();
    let keys: Vec<String> = slots.iter().map(|(_, _, k)| k.clone()).collect();
    let lists: Vec<List> = slots
        .into_iter()
        .zip(reader.tops(&keys, depth).await?)
        // An empty ranking: no device of the partition has data that
        // minute.
        .filter(|(_, members)| !members.is_empty())
        .map(|((partition, minute, key), members)| List {
            partition,
            minute,
            key,
            full: members.len() >= depth,
            members,
        })
        .collect();
    let values = match combine {
        Combine::Sum => sums(reader, &lists, limit).await?,
        Combine::Max => means(reader, metric, &lists).await?,
    };
    let ranked = rank(values, limit);
    let exact = certified(&ranked, limit, unread_bound(&lists, combine));
    Ok((ranked, exact))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(partition: u32, members: &[(&str, f64)], full: bool) -> List {
        List {
            partition,
            minute: 0,
            key: format!("k{partition}"),
            members: members.iter().map(|(m, s)| ((*m).to_owned(), *s)).collect(),
            full,
        }
    }

    /// Highest first, ties by id, cut at the limit.
    #[test]
    fn ranking_order() {
        let values: HashMap<String, f64> = [("b", 5.0), ("a", 5.0), ("c", 9.0), ("d", 1.0)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(
            rank(values, 3),
            vec![
                ("c".to_owned(), 9.0),
                ("a".to_owned(), 5.0),
                ("b".to_owned(), 5.0)
            ]
        );
    }

    /// A device not read is bounded by the sum (or the highest) of the
    /// lowest scores of its partition's full rankings; rankings read whole
    /// bound nothing.
    #[test]
    fn bounds_of_devices_not_read() {
        let lists = [
            list(0, &[("a", 9.0), ("b", 4.0)], true),
            list(0, &[("a", 7.0), ("c", 3.0)], true),
            list(0, &[("d", 1.0)], false),
            list(1, &[("x", 6.0), ("y", 5.0)], true),
        ];
        assert_eq!(unread_bound(&lists, Combine::Sum), Some(7.0));
        assert_eq!(unread_bound(&lists, Combine::Max), Some(5.0));
        assert_eq!(unread_bound(&lists[2..3], Combine::Sum), None);
    }

    /// Exact when the last of the answer reaches the bound, or nothing
    /// was left unread; not when it falls below or the answer is short.
    #[test]
    fn certificate() {
        let ranked = vec![("a".to_owned(), 9.0), ("b".to_owned(), 7.0)];
        assert!(certified(&ranked, 2, None));
        assert!(certified(&ranked, 2, Some(7.0)));
        assert!(!certified(&ranked, 2, Some(7.5)));
        assert!(!certified(&ranked, 3, Some(1.0)));
    }

    /// A fleet on the embedded log: `devices` devices over three minutes,
    /// event counts and GPU utilisation from `seed` (a few heavy devices
    /// when `skewed`), written as the worker writes them (rankings and
    /// device-minute records). Returns the reader (ranking depth `depth`),
    /// the window, and each device's window events and mean utilisation.
    async fn fleet(
        devices: u32,
        seed: u64,
        skewed: bool,
        depth: u32,
    ) -> (Reader, Window, HashMap<String, f64>, HashMap<String, f64>) {
        use testbed_stream::{AggregateStore as _, AnyLog, EventLog as _, MemoryLog, StoreArgs};
        let log = AnyLog::Memory(MemoryLog::new(&StoreArgs::default()));
        let keys = log.keys().clone();
        let minute = 29_000_000;
        let mut state = seed;
        let mut next = move |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        let (mut events, mut util) = (HashMap::new(), HashMap::new());
        let mut util_sums: HashMap<String, (f64, f64)> = HashMap::new();
        for d in 0..devices {
            let id = format!("d{d:03}");
            let p = testbed_stream::partition_of(&id, log.partitions());
            for m in minute..minute + 3 {
                let heavy = skewed && d % 37 == 0;
                let n = next(4) + if heavy { 20 + next(30) } else { 0 };
                if n == 0 {
                    continue;
                }
                let samples = 1 + next(3);
                let values: Vec<f64> = (0..samples).map(|_| next(1000) as f64 / 1000.0).collect();
                let sum: f64 = values.iter().sum();
                let max = values.iter().copied().fold(0.0, f64::max);
                let summary = format!(
                    "{samples} {sum} {} {max}",
                    values.iter().copied().fold(1.0, f64::min)
                );
                let fields = [
                    ("n".to_owned(), n.to_string()),
                    ("gpu.n".to_owned(), samples.to_string()),
                    ("gpu.util".to_owned(), summary),
                ];
                log.write_hash(&keys.device_minute(p, &id, m), &fields, None)
                    .await
                    .unwrap();
                log.zset_set(&keys.top(p, top::EVENTS, m), &id, n as f64)
                    .await
                    .unwrap();
                log.zset_set(&keys.top(p, top::GPU_UTIL, m), &id, max)
                    .await
                    .unwrap();
                *events.entry(id.clone()).or_insert(0.0) += n as f64;
                let s = util_sums.entry(id.clone()).or_insert((0.0, 0.0));
                s.0 += sum;
                s.1 += samples as f64;
            }
        }
        for (id, (sum, n)) in util_sums {
            util.insert(id, sum / n);
        }
        let config = crate::QueryConfig {
            query_top_depth: depth,
            ..crate::QueryConfig::default()
        };
        let window = Window::ending_at(
            (minute + 2) * 60_000 + 1,
            std::time::Duration::from_secs(120),
        );
        (Reader::new(log, &config), window, events, util)
    }

    /// Read deep enough to hold every device, the rankings answer exactly
    /// what a scan of every device-minute would (events: sums; GPU: means).
    #[tokio::test]
    async fn deep_reads_match_a_full_scan() {
        let (reader, window, events, util) = fleet(120, 7, false, 1000).await;
        for (metric, want) in [
            (TopMetric::EventCount, events),
            (TopMetric::GpuUtilization, util),
        ] {
            let (got, exact) = ranked(&reader, metric, window, 10).await.unwrap();
            assert!(exact, "{metric:?}");
            let want = rank(want, 10);
            assert_eq!(got.len(), 10);
            for ((gd, gv), (wd, wv)) in got.iter().zip(&want) {
                assert_eq!(gd, wd, "{metric:?}");
                assert!((gv - wv).abs() < 1e-9, "{metric:?} {gd}: {gv} != {wv}");
            }
        }
    }

    /// Read shallow (a few members per partition and minute), every answer
    /// the certificate calls exact is exactly a full scan's, and a skewed
    /// fleet (a few heavy devices) is certified.
    #[tokio::test]
    async fn certified_shallow_reads_are_exact() {
        let mut certified_runs = 0;
        for seed in 0..20 {
            let skewed = seed % 2 == 0;
            let (reader, window, events, util) = fleet(300, seed, skewed, 4).await;
            for (metric, want) in [
                (TopMetric::EventCount, events),
                (TopMetric::GpuUtilization, util),
            ] {
                let (got, exact) = ranked(&reader, metric, window, 5).await.unwrap();
                if metric == TopMetric::EventCount && skewed {
                    assert!(exact, "seed {seed}: a skewed fleet is certified");
                }
                if !exact {
                    continue;
                }
                certified_runs += 1;
                let want = rank(want, 5);
                let values = |r: &[(String, f64)]| r.iter().map(|(_, v)| *v).collect::<Vec<_>>();
                let (gv, wv) = (values(&got), values(&want));
                assert_eq!(gv.len(), wv.len(), "seed {seed} {metric:?}");
                for (g, w) in gv.iter().zip(&wv) {
                    assert!(
                        (g - w).abs() < 1e-9,
                        "seed {seed} {metric:?}: {gv:?} != {wv:?}"
                    );
                }
            }
        }
        assert!(certified_runs >= 10, "{certified_runs}");
    }
}
