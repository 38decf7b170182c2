//! The query service end to end: known events go through ingest and a
//! worker, then every QueryService RPC is checked against figures computed
//! from those events, on a real Redis and on the in-memory log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::bad_field;
use common::pipeline::{
    InProcess, event, expected, fast_worker, memory_log, publish_all, test_minute, wait_drained,
};
use testbed_ingest::IngestConfig;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_proto::v1::{
    Event, GetDeviceStatsRequest, GetPipelineStatsRequest, GetRunStatsRequest,
    GetTokenUsageRequest, ListDevicesRequest, PipelineStats, TokenGroupBy, TopDevicesRequest,
    TopMetric, WatchPipelineStatsRequest, event::Payload,
};
use testbed_stream::{AnyLog, RedisLog, StoreArgs, latency_bucket, latency_bucket_upper};
use testbed_test_support::RedisServer;
use tonic::transport::Channel;
use tonic::{Code, Status};

type Query = QueryServiceClient<Channel>;

async fn redis_log(url: String) -> AnyLog {
    let args = StoreArgs {
        redis_url: Some(url),
        redis_timeout: Duration::from_millis(300),
        ..StoreArgs::default()
    };
    AnyLog::Redis(RedisLog::connect(&args).await.unwrap())
}

async fn query_client(pipe: &InProcess) -> Query {
    let channel = Channel::from_shared(format!("http://{}", pipe.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    QueryServiceClient::new(channel)
}

fn secs(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

fn millis(ms: i32) -> prost_types::Duration {
    prost_types::Duration {
        seconds: 0,
        nanos: ms * 1_000_000,
    }
}

fn proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Publishes `events` in batches of 100, all accepted, and waits until the
/// worker has processed every one.
async fn publish_and_drain(pipe: &InProcess, log: &AnyLog, events: &[Event]) {
    let mut client = pipe.client().await;
    publish_all(&mut client, events, 100).await;
    let figures = wait_drained(log, events.len() as u64, Duration::from_secs(60)).await;
    assert_eq!(figures.processed, events.len() as u64);
}

/// Each device's `arch` label. Every event of a device carries the same
/// one (device `i % n` and arch `i % 2` agree for even `n`), so it does not
/// matter which event the worker folded last.
fn arch_by_device(events: &[Event]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in events {
        let arch = e.labels["arch"].clone();
        let previous = out.insert(e.device_id.clone(), arch.clone());
        assert!(previous.is_none_or(|p| p == arch), "{}", e.device_id);
    }
    out
}

/// 600 events over 12 devices (run `qa`) and 100 over the first 4 (run
/// `qb`), so devices differ in counts and kinds: GPU samples only reach
/// dev-0..3, dev-6 and dev-9.
fn known_events(minute: i64) -> Vec<Event> {
    let mut events: Vec<Event> = (0..600).map(|i| event("qa", i, 12, minute)).collect();
    events.extend((0..100).map(|i| event("qb", i, 4, minute)));
    events
}

/// Checks every query RPC against `events`, published into `log`.
async fn exact_queries_on(log: AnyLog) {
    let minute = test_minute();
    let events = known_events(minute);
    let pipe = InProcess::start(&log, IngestConfig::default(), Some(fast_worker())).await;
    publish_and_drain(&pipe, &log, &events).await;
    let mut q = query_client(&pipe).await;

    check_device_stats(&mut q, &events, minute).await;
    check_list_devices(&mut q, &events).await;
    check_top_devices(&mut q, &events).await;
    check_token_usage(&mut q, &events).await;
    check_pipeline_stats(&mut q, events.len() as u64).await;
    check_run_stats(&mut q, &events).await;

    let missing = q
        .get_device_stats(GetDeviceStatsRequest {
            device_id: "dev-999".into(),
            window: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let missing = q
        .get_run_stats(GetRunStatsRequest {
            run_id: "no-such-run".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    pipe.stop().await;
}

async fn check_device_stats(q: &mut Query, events: &[Event], minute: i64) {
    let arch = arch_by_device(events);
    for (device, want) in expected(events) {
        let mine: Vec<&Event> = events.iter().filter(|e| e.device_id == device).collect();
        let response = q
            .get_device_stats(GetDeviceStatsRequest {
                device_id: device.clone(),
                window: None,
            })
            .await
            .unwrap()
            .into_inner();
        let info = response.device.unwrap();
        assert_eq!(info.device_id, device);
        assert_eq!(
            info.labels,
            HashMap::from([("arch".to_owned(), arch[&device].clone())])
        );
        let last_seen = mine
            .iter()
            .map(|e| e.observed_at.unwrap().seconds)
            .max()
            .unwrap();
        assert_eq!(
            info.last_seen_time,
            Some(prost_types::Timestamp {
                seconds: last_seen,
                nanos: 0
            })
        );

        let totals = response.totals.unwrap();
        let gpu = totals.gpu.unwrap();
        let tokens = totals.tokens.unwrap();
        let fan = totals.metrics.iter().find(|m| m.name == "fan_speed");
        let actual = (
            totals.event_count,
            gpu.count,
            tokens.count,
            tokens.prompt_tokens,
            tokens.completion_tokens,
            fan.map_or(0, |m| m.value.unwrap().count),
        );
        let wanted = (
            want.events,
            want.gpu,
            want.tokens,
            want.prompt,
            want.completion,
            want.metrics,
        );
        assert_eq!(actual, wanted, "{device}");
        assert_eq!(
            totals.metrics.len(),
            usize::from(want.metrics > 0),
            "{device}"
        );
        if let Some(fan) = fan {
            assert_eq!(fan.unit, "1");
        }

        // Minimum and maximum are exact whatever the summing order.
        let powers: Vec<f64> = mine
            .iter()
            .filter_map(|e| match &e.payload {
                Some(Payload::Gpu(g)) => Some(g.power_watts),
                _ => None,
            })
            .collect();
        let power = gpu.power_watts.unwrap();
        assert_eq!(power.count, powers.len() as u64, "{device}");
        if !powers.is_empty() {
            assert_eq!(power.min, powers.iter().copied().fold(f64::MAX, f64::min));
            assert_eq!(power.max, powers.iter().copied().fold(f64::MIN, f64::max));
        }
        let latency = tokens.latency.unwrap();
        assert_eq!(latency.count, want.tokens);
        if want.tokens > 0 {
            assert_eq!((latency.min, latency.max), (0.02, 0.02), "{device}");
        }

        // Every test event falls in one minute: one bucket holding all.
        assert_eq!(response.series.len(), 1, "{device}");
        let bucket = &response.series[0];
        assert_eq!(bucket.start_time.unwrap().seconds, minute * 60);
        assert_eq!(bucket.event_count, want.events);
        assert_eq!(bucket.gpu.unwrap().count, want.gpu);
    }
}

/// Walks ListDevices with `filter` in pages of `page_size`; returns the
/// pages.
async fn walk(q: &mut Query, page_size: i32, filter: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = q
            .list_devices(ListDevicesRequest {
                page_size,
                page_token: page_token.clone(),
                filter: filter.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        pages.push(
            page.devices
                .iter()
                .map(|d| d.device_id.clone())
                .collect::<Vec<_>>(),
        );
        if page.next_page_token.is_empty() {
            return pages;
        }
        assert!(pages.len() <= 100, "pagination does not end");
        page_token = page.next_page_token;
    }
}

async fn check_list_devices(q: &mut Query, events: &[Event]) {
    let arch = arch_by_device(events);
    // Lexicographic: dev-0, dev-1, dev-10, dev-11, dev-2, ...
    let all: Vec<String> = arch.keys().cloned().collect();
    assert_eq!(all.len(), 12);
    let pages = walk(q, 3, "").await;
    assert_eq!(pages.len(), 4, "{pages:?}");
    assert!(pages.iter().all(|p| p.len() == 3), "{pages:?}");
    assert_eq!(pages.concat(), all);

    let arm: Vec<String> = arch
        .iter()
        .filter(|(_, a)| *a == "arm64")
        .map(|(d, _)| d.clone())
        .collect();
    assert_eq!(
        arm,
        ["dev-1", "dev-11", "dev-3", "dev-5", "dev-7", "dev-9"].map(String::from)
    );
    assert_eq!(walk(q, 0, "arch=arm64").await, vec![arm.clone()]);
    assert_eq!(walk(q, 4, "arch=arm64").await.concat(), arm);
    assert_eq!(walk(q, 0, "arch=riscv").await, vec![Vec::<String>::new()]);

    // A token only continues the listing it was issued for.
    let first = q
        .list_devices(ListDevicesRequest {
            page_size: 2,
            page_token: String::new(),
            filter: "arch=arm64".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let other = q
        .list_devices(ListDevicesRequest {
            page_size: 2,
            page_token: first.next_page_token,
            filter: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_field(&other), "page_token");
}

async fn top(q: &mut Query, metric: TopMetric, limit: i32) -> Vec<(String, f64)> {
    let response = q
        .top_devices(TopDevicesRequest {
            metric: metric as i32,
            window: None,
            limit,
        })
        .await
        .unwrap()
        .into_inner();
    let arch_ok = response
        .devices
        .iter()
        .all(|d| d.labels.get("arch").is_some_and(|a| !a.is_empty()));
    assert!(arch_ok, "labels of ranked devices: {:?}", response.devices);
    response
        .devices
        .into_iter()
        .map(|d| (d.device_id, d.value))
        .collect()
}

/// Highest first, ties by device id, cut at `limit`.
fn ranked(mut values: Vec<(String, f64)>, limit: usize) -> Vec<(String, f64)> {
    values.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    values.truncate(limit);
    values
}

async fn check_top_devices(q: &mut Query, events: &[Event]) {
    let want = expected(events);
    let by_events = ranked(
        want.iter()
            .map(|(d, x)| (d.clone(), x.events as f64))
            .collect(),
        5,
    );
    assert_eq!(top(q, TopMetric::EventCount, 5).await, by_events);
    // dev-0..3 have 25 extra events each, and dev-0..dev-3 lead.
    assert_eq!(by_events[0], ("dev-0".to_owned(), 75.0));

    let by_tokens = ranked(
        want.iter()
            .filter(|(_, x)| x.tokens > 0)
            .map(|(d, x)| (d.clone(), (x.prompt + x.completion) as f64))
            .collect(),
        10,
    );
    assert_eq!(top(q, TopMetric::Tokens, 0).await, by_tokens);

    // Mean power: integer watts, so sums and means are exact.
    let mut power: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for e in events {
        if let Some(Payload::Gpu(g)) = &e.payload {
            let p = power.entry(e.device_id.clone()).or_default();
            p.0 += g.power_watts;
            p.1 += 1.0;
        }
    }
    let by_power = ranked(
        power
            .into_iter()
            .map(|(d, (sum, n))| (d, sum / n))
            .collect(),
        100,
    );
    let gpu_devices: Vec<&str> = {
        let mut ids: Vec<&str> = by_power.iter().map(|(d, _)| d.as_str()).collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(
        gpu_devices,
        ["dev-0", "dev-1", "dev-2", "dev-3", "dev-6", "dev-9"]
    );
    assert_eq!(top(q, TopMetric::GpuPower, 1000).await, by_power);
}

async fn check_token_usage(q: &mut Query, events: &[Event]) {
    let bound = latency_bucket_upper(latency_bucket(20));
    for (group_by, key_of) in [
        (
            TokenGroupBy::Unspecified,
            (|t: &testbed_proto::v1::TokenUsage| t.model.clone()) as fn(&_) -> String,
        ),
        (TokenGroupBy::Model, |t| t.model.clone()),
        (TokenGroupBy::Tenant, |t| t.tenant.clone()),
    ] {
        let mut want: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for e in events {
            if let Some(Payload::Tokens(t)) = &e.payload {
                let g = want.entry(key_of(t)).or_default();
                g.0 += 1;
                g.1 += t.prompt_tokens;
                g.2 += t.completion_tokens;
            }
        }
        let response = q
            .get_token_usage(GetTokenUsageRequest {
                group_by: group_by as i32,
                window: Some(secs(3600)),
            })
            .await
            .unwrap()
            .into_inner();
        let got: BTreeMap<String, (u64, u64, u64)> = response
            .groups
            .iter()
            .map(|g| {
                (
                    g.key.clone(),
                    (g.requests, g.prompt_tokens, g.completion_tokens),
                )
            })
            .collect();
        assert_eq!(got, want, "{group_by:?}");
        let keys: Vec<&str> = response.groups.iter().map(|g| g.key.as_str()).collect();
        assert!(keys.is_sorted(), "{keys:?}");
        for g in &response.groups {
            // Every request took 20 ms: every percentile is its bucket's bound.
            let l = g.latency.unwrap();
            assert_eq!(
                (l.p50, l.p90, l.p99, l.max),
                (
                    Some(proto(bound)),
                    Some(proto(bound)),
                    Some(proto(bound)),
                    Some(proto(bound))
                ),
                "{}",
                g.key
            );
        }
    }
}

async fn pipeline_stats(q: &mut Query, window: Option<prost_types::Duration>) -> PipelineStats {
    q.get_pipeline_stats(GetPipelineStatsRequest { window })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
}

async fn check_pipeline_stats(q: &mut Query, total: u64) {
    let stats = pipeline_stats(q, None).await;
    assert_eq!(
        (
            stats.ingested,
            stats.processed,
            stats.duplicates,
            stats.dead_lettered,
            stats.backlog,
            stats.pending
        ),
        (total, total, 0, 0, 0, 0)
    );
    // Default window 5m: every processed event of the last minutes counted.
    assert_eq!(stats.processing_rate, total as f64 / 300.0);
    let e2e = stats.end_to_end_latency.unwrap();
    let as_std = |d: Option<prost_types::Duration>| Duration::try_from(d.unwrap()).unwrap();
    let (p50, p90, p99, max) = (
        as_std(e2e.p50),
        as_std(e2e.p90),
        as_std(e2e.p99),
        as_std(e2e.max),
    );
    assert!(
        Duration::ZERO < p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
        "{e2e:?}"
    );
    assert!(stats.time.is_some());
    let hour = pipeline_stats(q, Some(secs(3600))).await;
    assert_eq!(hour.processing_rate, total as f64 / 3600.0);
}

async fn check_run_stats(q: &mut Query, events: &[Event]) {
    for run in ["qa", "qb"] {
        let mine: Vec<&Event> = events.iter().filter(|e| e.run_id == run).collect();
        let kind = |k: fn(&Payload) -> bool| {
            mine.iter()
                .filter(|e| e.payload.as_ref().is_some_and(k))
                .count() as u64
        };
        let stats = q
            .get_run_stats(GetRunStatsRequest { run_id: run.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.run_id, run);
        assert_eq!(
            (
                stats.processed,
                stats.processed_gpu,
                stats.processed_tokens,
                stats.processed_metric
            ),
            (
                mine.len() as u64,
                kind(|p| matches!(p, Payload::Gpu(_))),
                kind(|p| matches!(p, Payload::Tokens(_))),
                kind(|p| matches!(p, Payload::Metric(_))),
            ),
            "{run}"
        );
        // The run's own latency histogram counts every processed event once,
        // and its first event is the earliest observed_at of the run.
        let latency = stats.end_to_end_latency.expect("run latency");
        assert!(latency.p50.is_some() && latency.max.is_some(), "{run}");
        let first = mine
            .iter()
            .filter_map(|e| e.observed_at.as_ref())
            .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
            .min()
            .unwrap();
        let got = stats.first_event_time.expect("first event time");
        assert_eq!(
            got.seconds * 1000 + i64::from(got.nanos) / 1_000_000,
            first,
            "{run}"
        );
        assert!(stats.last_processed_time.is_some(), "{run}");
    }
}

/// Every query RPC answers exact figures over events processed on a real Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_exact_on_redis() {
    let redis = RedisServer::start();
    exact_queries_on(redis_log(redis.url()).await).await;
}

/// Every query RPC answers exact figures over events processed on the in-memory log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_exact_in_memory() {
    exact_queries_on(memory_log()).await;
}

/// Out-of-bounds and malformed fields are INVALID_ARGUMENT with a BadRequest naming the field.
#[tokio::test]
async fn invalid_requests_name_their_field() {
    let log = memory_log();
    let pipe = InProcess::start(&log, IngestConfig::default(), None).await;
    let mut q = query_client(&pipe).await;
    let device = |device_id: &str, window| GetDeviceStatsRequest {
        device_id: device_id.into(),
        window,
    };
    let top = |metric: TopMetric, window, limit| TopDevicesRequest {
        metric: metric as i32,
        window,
        limit,
    };
    let list = |page_size, page_token: &str, filter: &str| ListDevicesRequest {
        page_size,
        page_token: page_token.into(),
        filter: filter.into(),
    };

    let cases: Vec<(Status, &str)> = vec![
        (
            q.get_device_stats(device("", None)).await.unwrap_err(),
            "device_id",
        ),
        (
            q.get_device_stats(device("dev-1", Some(secs(10))))
                .await
                .unwrap_err(),
            "window",
        ),
        (
            q.top_devices(top(TopMetric::EventCount, Some(secs(25 * 3600)), 0))
                .await
                .unwrap_err(),
            "window",
        ),
        // Within 24h but past the 1h retention.
        (
            q.top_devices(top(TopMetric::EventCount, Some(secs(2 * 3600)), 0))
                .await
                .unwrap_err(),
            "window",
        ),
        (
            q.top_devices(top(TopMetric::EventCount, None, -1))
                .await
                .unwrap_err(),
            "limit",
        ),
        (
            q.top_devices(top(TopMetric::Unspecified, None, 0))
                .await
                .unwrap_err(),
            "metric",
        ),
        (
            q.list_devices(list(0, "not-a-token", ""))
                .await
                .unwrap_err(),
            "page_token",
        ),
        (
            q.list_devices(list(-1, "", "")).await.unwrap_err(),
            "page_size",
        ),
        (
            q.list_devices(list(0, "", "arch")).await.unwrap_err(),
            "filter",
        ),
        (
            q.get_token_usage(GetTokenUsageRequest {
                group_by: 0,
                window: Some(secs(-60)),
            })
            .await
            .unwrap_err(),
            "window",
        ),
        (
            q.get_pipeline_stats(GetPipelineStatsRequest {
                window: Some(secs(59)),
            })
            .await
            .unwrap_err(),
            "window",
        ),
        (
            q.watch_pipeline_stats(WatchPipelineStatsRequest {
                interval: Some(millis(10)),
                window: None,
            })
            .await
            .unwrap_err(),
            "interval",
        ),
        (
            q.get_run_stats(GetRunStatsRequest {
                run_id: String::new(),
            })
            .await
            .unwrap_err(),
            "run_id",
        ),
    ];
    for (status, field) in cases {
        assert_eq!(bad_field(&status), field, "{status:?}");
    }
    pipe.stop().await;
}

/// A watch stream delivers updates every interval, ends when the client
/// drops it, and the server keeps answering afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_updates_until_the_client_leaves() {
    let log = memory_log();
    let pipe = InProcess::start(&log, IngestConfig::default(), Some(fast_worker())).await;
    let minute = test_minute();
    let events: Vec<Event> = (0..30).map(|i| event("watch", i, 3, minute)).collect();
    publish_and_drain(&pipe, &log, &events).await;

    let mut q = query_client(&pipe).await;
    let mut stream = q
        .watch_pipeline_stats(WatchPipelineStatsRequest {
            interval: Some(millis(100)),
            window: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut times = Vec::new();
    for _ in 0..3 {
        let message = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("an update within 5 s")
            .unwrap()
            .expect("the stream is still open");
        let stats = message.stats.unwrap();
        assert_eq!((stats.ingested, stats.processed), (30, 30));
        assert_eq!(stats.processing_rate, 30.0 / 300.0);
        times.push(stats.time.unwrap());
    }
    assert!(
        times
            .windows(2)
            .all(|w| (w[0].seconds, w[0].nanos) < (w[1].seconds, w[1].nanos)),
        "{times:?}"
    );
    drop(stream);

    let stats = pipeline_stats(&mut q, None).await;
    assert_eq!(stats.processed, 30);
    // Nothing of the dropped stream holds the server: it stops well within
    // its 5 s grace period.
    let started = Instant::now();
    pipe.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// At shutdown an open watch stream ends with OK, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_with_ok_at_shutdown() {
    let log = memory_log();
    let pipe = InProcess::start(&log, IngestConfig::default(), None).await;
    let mut q = query_client(&pipe).await;
    let mut stream = q
        .watch_pipeline_stats(WatchPipelineStatsRequest {
            interval: Some(secs(60)),
            window: None,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.stats.unwrap().processed, 0);

    // The next tick is a minute away: only the shutdown can end the stream.
    let started = Instant::now();
    pipe.shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .expect("the stream ends within 3 s");
    assert!(matches!(end, Ok(None)), "ended with OK: {end:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    pipe.stop().await;
}
