//! Worker processes killed with SIGKILL mid-run, and several workers in
//! one group: counts stay exact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Testbed;
use common::pipeline::{
    InProcess, assert_folded, event, publish_all, test_minute, totals, wait_drained,
};
use testbed_ingest::IngestConfig;
use testbed_proto::v1::Event;
use testbed_stream::{AnyLog, RedisLog, StoreArgs};
use testbed_test_support::RedisServer;

fn start_worker(redis: &RedisServer) -> Testbed {
    let url = redis.url();
    let mut args = vec!["worker", "--redis-url", url.as_str(), "--read-count", "4"];
    args.extend(common::FAST_WORKER_FLAGS);
    Testbed::start(&args)
}

async fn redis_log(redis: &RedisServer) -> AnyLog {
    let args = StoreArgs {
        redis_url: Some(redis.url()),
        ..StoreArgs::default()
    };
    AnyLog::Redis(RedisLog::connect(&args).await.unwrap())
}

/// Publishes `events` in batches of 50 from a background task.
async fn publish_in_background(
    pipe: &InProcess,
    events: Vec<Event>,
) -> tokio::task::JoinHandle<()> {
    let mut client = pipe.client().await;
    tokio::spawn(async move {
        publish_all(&mut client, &events, 50).await;
    })
}

async fn wait_processed_over(log: &AnyLog, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while totals(log).await.processed <= n {
        assert!(Instant::now() < deadline, "processing stalled below {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A worker SIGKILLed three times mid-run and restarted: every event is
/// counted exactly once (pending entries of the dead are claimed, and an
/// entry applied just before the kill is never applied again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_loses_and_doubles_nothing() {
    let redis = RedisServer::start();
    let log = redis_log(&redis).await;
    let pipe = InProcess::start(&log, IngestConfig::default(), None).await;
    let minute = test_minute();
    let events: Vec<Event> = (0..6000).map(|i| event("kill", i, 24, minute)).collect();
    let publisher = publish_in_background(&pipe, events.clone()).await;

    let mut worker = start_worker(&redis);
    for round in 1..=3u64 {
        wait_processed_over(&log, round * 1000).await;
        worker.kill();
        worker = start_worker(&redis);
    }
    publisher.await.unwrap();
    let figures = wait_drained(&log, 6000, Duration::from_secs(60)).await;
    assert_eq!(
        (figures.ingested, figures.processed, figures.dead_lettered),
        (6000, 6000, 0)
    );
    assert_folded(&log, &events, minute).await;
    drop(worker);
    pipe.stop().await;
}

/// Two workers in one group share the work and together count exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_group_exactly() {
    let redis = RedisServer::start();
    let log = redis_log(&redis).await;
    let pipe = InProcess::start(&log, IngestConfig::default(), None).await;
    let (a, b) = (start_worker(&redis), start_worker(&redis));
    let minute = test_minute();
    let events: Vec<Event> = (0..4000).map(|i| event("two", i, 32, minute)).collect();
    publish_in_background(&pipe, events.clone())
        .await
        .await
        .unwrap();
    let figures = wait_drained(&log, 4000, Duration::from_secs(60)).await;
    assert_eq!((figures.ingested, figures.processed), (4000, 4000));
    assert_folded(&log, &events, minute).await;
    // Both consumers joined the group of every partition.
    let stream = testbed_stream::EventLog::keys(&log).stream(0);
    let consumers = redis.command(&["XINFO", "CONSUMERS", &stream, "workers"]);
    assert_eq!(consumers, "*2", "{consumers}");
    drop((a, b));
    pipe.stop().await;
}

/// The scheduling policy of every thread of `pid` (field 41 of
/// `/proc/<pid>/task/<tid>/stat`: 0 normal, 3 batch, 5 idle) and nice
/// value (field 19).
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        // Fields after the command name, which is in parentheses: field 3 on.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        out.push((
            fields[41 - 3].parse().unwrap(),
            fields[19 - 3].parse().unwrap(),
        ));
    }
    out
}

/// `--cpu-class idle` puts every thread of a running worker (the runtime's
/// workers, blocking pool and all) in SCHED_IDLE, and it still works;
/// without the flag they are SCHED_BATCH at nice 19, with `normal` at the
/// normal policy and nice 0.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_class_idle_covers_every_worker_thread() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    const SCHED_IDLE: u32 = 5;
    let redis = RedisServer::start();
    let url = redis.url();
    let with_class = |class: &'static str| {
        let mut args = vec!["worker", "--redis-url", url.as_str(), "--cpu-class", class];
        args.extend(common::FAST_WORKER_FLAGS);
        Testbed::start(&args)
    };
    let idle = with_class("idle");
    idle.wait_serving("testbed.v1.WorkerControlService").await;
    let default = start_worker(&redis);
    default
        .wait_serving("testbed.v1.WorkerControlService")
        .await;
    let normal = with_class("normal");
    normal.wait_serving("testbed.v1.WorkerControlService").await;

    for (worker, policy, nice) in [
        (&idle, SCHED_IDLE, 0),
        (&default, SCHED_BATCH, 19),
        (&normal, SCHED_OTHER, 0),
    ] {
        let threads = thread_policies(worker.pid());
        assert!(threads.len() > 1, "{threads:?}");
        assert!(
            threads.iter().all(|t| *t == (policy, nice)),
            "want {:?}: {threads:?}",
            (policy, nice)
        );
    }

    // The idle worker still folds: with the others stopped, it drains.
    drop(default);
    drop(normal);
    let log = redis_log(&redis).await;
    let pipe = InProcess::start(&log, IngestConfig::default(), None).await;
    let minute = test_minute();
    let events: Vec<Event> = (0..400).map(|i| event("idle", i, 8, minute)).collect();
    publish_in_background(&pipe, events.clone())
        .await
        .await
        .unwrap();
    let figures = wait_drained(&log, 400, Duration::from_secs(60)).await;
    assert_eq!((figures.ingested, figures.processed), (400, 400));
    assert_folded(&log, &events, minute).await;
    drop(idle);
    pipe.stop().await;
}
