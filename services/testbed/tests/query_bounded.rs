//! Every Redis command a query sends is bounded (#32): its cost does not
//! grow with the fleet. A `testbed query` process alone on a Redis that a
//! pipeline filled with 300 devices answers every QueryService RPC while
//! `MONITOR` records what it sends; each command is checked against the
//! rules below, and a violation names the command and its key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Testbed;
use common::pipeline::{
    InProcess, event, fast_worker, publish, publish_all, test_minute, wait_drained,
};
use testbed_ingest::IngestConfig;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_proto::v1::{
    GetDeviceStatsRequest, GetPipelineStatsRequest, GetRunStatsRequest, GetTokenUsageRequest,
    ListDevicesRequest, ListDevicesResponse, TokenGroupBy, TopDevicesRequest, TopMetric,
    WatchPipelineStatsRequest,
};
use testbed_stream::{AnyLog, RedisLog, StoreArgs};
use testbed_test_support::RedisServer;

/// A command MONITOR saw: the client that sent it, and its words.
type Seen = (String, Vec<String>);

/// Devices the pipeline indexes: more than a page of any call below.
const DEVICES: u64 = 300;

/// `redis-cli monitor` on `port`: each command any client sends, as its
/// words, until [`Monitor::until`] sees the marker.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    /// Starts it and waits for its `OK`, so nothing sent after is missed.
    fn start(port: u16) -> Self {
        let mut child = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli (scripts/setup-tools installs it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(first, "OK", "monitor did not start");
        Self { child, lines }
    }

    /// The commands seen until one whose words include `marker` (sent by
    /// the test once the calls it checks have returned): (client, words).
    fn until(&self, marker: &str) -> Vec<Seen> {
        let mut out = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .expect("the marker within 10 s");
            let Some((client, words)) = parse(&line) else {
                continue;
            };
            if words.iter().any(|w| w == marker) {
                return out;
            }
            out.push((client, words));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A MONITOR line `<time> [<db> <client>] "WORD" "WORD" ...` taken apart
/// (quoted words with `\"`, `\\` and `\xNN` escapes).
fn parse(line: &str) -> Option<(String, Vec<String>)> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let client = line[open + 1..close]
        .split_once(' ')
        .map_or("", |(_, c)| c)
        .to_owned();
    let mut words = Vec::new();
    let mut chars = line[close + 1..].chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('x') => {
                        let hex: String = chars.by_ref().take(2).collect();
                        word.push(u8::from_str_radix(&hex, 16).map_or('?', char::from));
                    }
                    Some(other) => word.push(other),
                    None => break,
                },
                other => word.push(other),
            }
        }
        words.push(word);
    }
    Some((client, words))
}

/// Keys whose size grows with the fleet: per-minute device records and
/// rankings, the device states, the device indexes and the label postings.
fn fleet_sized(key: &str) -> bool {
    [
        ":dm/",
        ":top/",
        ":dev",
        ":devices",
        ":device-ids",
        ":label/",
    ]
    .iter()
    .any(|part| key.contains(part))
}

/// Why `words` (a command and its arguments) may cost in proportion to
/// the fleet, `None` when its cost is bounded whatever the fleet: by the
/// arguments it carries (HMGET, ZMSCORE), by a LIMIT or COUNT, or because
/// its key is one whose size the schema bounds (pipeline counters, a
/// minute's token groups or latency buckets, a run's ledger, settings).
fn unbounded(words: &[String]) -> Option<String> {
    let name = words.first()?.to_uppercase();
    let key = words.get(1).map_or("", String::as_str);
    let has = |w: &str| words.iter().any(|x| x.eq_ignore_ascii_case(w));
    let why = match name.as_str() {
        // Bounded by their arguments, or O(1), or the pending summary.
        "PING" | "HGET" | "HMGET" | "ZSCORE" | "ZMSCORE" | "ZCARD" | "GET" | "EXISTS" | "TTL"
        | "PTTL" | "TYPE" | "XLEN" | "XPENDING" | "CLIENT" | "HELLO" | "SELECT" | "ECHO"
        | "INFO" | "CONFIG" | "MULTI" | "EXEC" | "HSETNX" => return None,
        "HGETALL" | "HKEYS" | "HVALS" | "HLEN" if !fleet_sized(key) => return None,
        "HGETALL" | "HKEYS" | "HVALS" => "reads a whole fleet-sized hash",
        "ZRANGE" | "ZRANGEBYLEX" | "ZRANGEBYSCORE" | "ZREVRANGE" | "ZREVRANGEBYLEX"
        | "ZREVRANGEBYSCORE"
            if has("LIMIT") =>
        {
            return None;
        }
        "ZRANGE" | "ZRANGEBYLEX" | "ZRANGEBYSCORE" | "ZREVRANGE" | "ZREVRANGEBYLEX"
        | "ZREVRANGEBYSCORE" => "a range without LIMIT",
        "SCAN" | "HSCAN" | "ZSCAN" | "SSCAN" if has("COUNT") => return None,
        "SCAN" | "HSCAN" | "ZSCAN" | "SSCAN" => "a scan without COUNT",
        "XRANGE" | "XREVRANGE" if has("COUNT") => return None,
        "XRANGE" | "XREVRANGE" => "a stream range without COUNT",
        "KEYS" | "SMEMBERS" | "SUNION" | "SINTER" | "SORT" | "ZUNIONSTORE" | "ZINTERSTORE"
        | "ZUNION" | "ZINTER" | "LRANGE" => "walks a whole collection",
        _ => "not known to be bounded (add it here, with the reason, if it is)",
    };
    Some(format!("{}: {why}", words.join(" ")))
}

/// Publishes `DEVICES` devices' events through an in-process pipeline on
/// `url`, waits until all are processed, and stops it.
async fn fill(url: &str) {
    let args = StoreArgs {
        redis_url: Some(url.to_owned()),
        ..StoreArgs::default()
    };
    let log = AnyLog::Redis(RedisLog::connect(&args).await.unwrap());
    let pipe = InProcess::start(&log, IngestConfig::default(), Some(fast_worker())).await;
    let minute = test_minute();
    let events: Vec<_> = (0..DEVICES * 3)
        .map(|i| event("qbound", i, DEVICES, minute))
        .collect();
    let mut client = pipe.client().await;
    publish_all(&mut client, &events, 100).await;
    wait_drained(&log, events.len() as u64, Duration::from_secs(60)).await;
    pipe.stop().await;
}

/// A page of 10 devices matching `filter`, from `page_token`.
async fn list_devices(
    q: &mut QueryServiceClient<tonic::transport::Channel>,
    filter: &str,
    page_token: String,
) -> ListDevicesResponse {
    q.list_devices(ListDevicesRequest {
        page_size: 10,
        filter: filter.to_owned(),
        page_token,
    })
    .await
    .unwrap()
    .into_inner()
}

/// Every query RPC's Redis commands are bounded, TopDevices' included
/// (#32 item 3: it reads the rankings kept at write time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_command_is_bounded() {
    let redis = RedisServer::start();
    fill(&redis.url()).await;
    let query = Testbed::start(&["query", "--redis-url", &redis.url()]);
    query.wait_serving("testbed.v1.QueryService").await;
    let mut q = QueryServiceClient::new(query.channel().await);
    let monitor = Monitor::start(redis.port);

    // Each RPC (ListDevices: first and next page, filtered, and a filter
    // nobody matches), then the marker: what MONITOR saw in between is
    // what the calls (and the query's health probes) sent.
    let mut calls: Vec<(&str, Vec<Seen>)> = Vec::new();
    let mark = |name: &'static str, calls: &mut Vec<_>| {
        let marker = format!("end-of-{name}");
        redis.command(&["ECHO", &marker]);
        calls.push((name, monitor.until(&marker)));
    };
    let first = list_devices(&mut q, "", String::new()).await;
    assert_eq!(first.devices.len(), 10);
    mark("ListDevices", &mut calls);
    let next = list_devices(&mut q, "", first.next_page_token).await;
    assert_eq!(next.devices.len(), 10);
    mark("ListDevices next page", &mut calls);
    let arm = list_devices(&mut q, "arch=arm64", String::new()).await;
    assert_eq!(arm.devices.len(), 10);
    assert!(arm.devices.iter().all(|d| d.labels["arch"] == "arm64"));
    mark("ListDevices arch=arm64", &mut calls);
    let none = list_devices(&mut q, "arch=riscv", String::new()).await;
    assert!(none.devices.is_empty() && none.next_page_token.is_empty());
    mark("ListDevices arch=riscv", &mut calls);
    q.get_device_stats(GetDeviceStatsRequest {
        device_id: "dev-7".into(),
        window: None,
    })
    .await
    .unwrap();
    mark("GetDeviceStats", &mut calls);
    q.get_token_usage(GetTokenUsageRequest {
        group_by: TokenGroupBy::Model as i32,
        window: None,
    })
    .await
    .unwrap();
    mark("GetTokenUsage", &mut calls);
    q.get_pipeline_stats(GetPipelineStatsRequest { window: None })
        .await
        .unwrap();
    mark("GetPipelineStats", &mut calls);
    let mut watch = q
        .watch_pipeline_stats(WatchPipelineStatsRequest {
            interval: None,
            window: None,
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();
    drop(watch);
    mark("WatchPipelineStats", &mut calls);
    q.get_run_stats(GetRunStatsRequest {
        run_id: "qbound".into(),
    })
    .await
    .unwrap();
    mark("GetRunStats", &mut calls);
    let top = q
        .top_devices(TopDevicesRequest {
            metric: TopMetric::EventCount as i32,
            limit: 5,
            window: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(top.devices.len(), 5);
    mark("TopDevices", &mut calls);

    let gpu = q
        .top_devices(TopDevicesRequest {
            metric: TopMetric::GpuUtilization as i32,
            limit: 5,
            window: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gpu.devices.len(), 5);
    mark("TopDevices gpu", &mut calls);

    let mut violations: Vec<String> = Vec::new();
    for (name, commands) in &calls {
        assert!(
            commands
                .iter()
                .any(|(_, w)| w.first().is_some_and(|c| c != "PING")),
            "{name}: no command seen"
        );
        for (_, words) in commands {
            if let Some(why) = unbounded(words) {
                violations.push(format!("{name}: {why}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "unbounded commands:\n{}",
        violations.join("\n")
    );
    // TopDevices reads the rankings kept at write time (#32 item 3), a
    // bounded range of each, and no device-minute container whole.
    let top_reads: Vec<&Vec<String>> = calls
        .iter()
        .filter(|(name, _)| name.starts_with("TopDevices"))
        .flat_map(|(_, commands)| commands.iter().map(|(_, w)| w))
        .collect();
    assert!(
        top_reads
            .iter()
            .any(|w| w[0].eq_ignore_ascii_case("ZRANGE") && w[1].contains(":top/")),
        "{top_reads:?}"
    );
}

/// In `testbed all`, which both writes and reads, the query's commands
/// come from connections no append or apply uses; with Redis frozen, a
/// query answers DEADLINE_EXCEEDED at its budget (not UNAVAILABLE, though
/// `--redis-timeout` is shorter), and answers again once Redis does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_reads_have_their_own_connections_and_budget() {
    let redis = RedisServer::start();
    let url = redis.url();
    let all = Testbed::start(&[
        "all",
        "--redis-url",
        &url,
        "--redis-timeout",
        "100ms",
        "--query-timeout",
        "300ms",
    ]);
    all.wait_serving("testbed.v1.QueryService").await;
    let channel = all.channel().await;
    let mut q = QueryServiceClient::new(channel.clone());
    let mut ingest = testbed_proto::v1::ingest_service_client::IngestServiceClient::new(channel);
    let monitor = Monitor::start(redis.port);
    let minute = test_minute();
    let events: Vec<_> = (0..200).map(|i| event("own", i, 50, minute)).collect();
    publish(&mut ingest, events).await.unwrap();
    // Until the worker has indexed them all (reads meanwhile are fine).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = q
            .list_devices(ListDevicesRequest {
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if page.devices.len() == 50 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not indexed in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.command(&["ECHO", "end-of-own"]);
    let seen = monitor.until("end-of-own");
    let clients = |names: &[&str]| -> std::collections::BTreeSet<String> {
        seen.iter()
            .filter(|(_, w)| names.iter().any(|n| w[0].eq_ignore_ascii_case(n)))
            .map(|(c, _)| c.clone())
            .collect()
    };
    let readers = clients(&["ZRANGEBYLEX"]);
    let writers = clients(&["EVALSHA", "EVAL", "XADD", "XACK", "EXEC"]);
    assert!(!readers.is_empty() && !writers.is_empty(), "{seen:?}");
    assert!(
        readers.is_disjoint(&writers),
        "reads {readers:?} share a connection with writes {writers:?}"
    );
    drop(monitor);

    redis.pause();
    let started = std::time::Instant::now();
    let status = q
        .list_devices(ListDevicesRequest {
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap_err();
    let waited = started.elapsed();
    redis.resume();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("--query-timeout"), "{status:?}");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    let page = q
        .list_devices(ListDevicesRequest {
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.devices.len(), 10);
}

/// The rules name what they refuse and pass what is bounded.
#[test]
fn the_rules_name_unbounded_commands() {
    let words = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
    for bounded in [
        "ZRANGEBYLEX {t:p0}:device-ids - + LIMIT 0 11",
        "HMGET {t:p0}:dev d1 d2",
        "HGETALL {t:p0}:tok:m:123",
        "ZCARD {t:p0}:label/61/62",
        "PING",
    ] {
        assert_eq!(unbounded(&words(bounded)), None, "{bounded}");
    }
    for (command, why) in [
        ("ZRANGE {t:p0}:devices 0 -1 WITHSCORES", "without LIMIT"),
        ("HGETALL {t:p0}:dm/123", "fleet-sized hash"),
        ("SMEMBERS s", "whole collection"),
        ("KEYS *", "whole collection"),
        ("SCAN 0", "without COUNT"),
        ("DEBUG SLEEP", "not known"),
    ] {
        let found = unbounded(&words(command)).unwrap();
        assert!(found.starts_with(command) && found.contains(why), "{found}");
    }
    assert_eq!(
        parse(r#"1.5 [0 127.0.0.1:5000] "HGET" "{t:p0}:dev" "a\"b\x41""#),
        Some((
            "127.0.0.1:5000".to_owned(),
            vec![
                "HGET".to_owned(),
                "{t:p0}:dev".to_owned(),
                "a\"bA".to_owned()
            ]
        ))
    );
}
