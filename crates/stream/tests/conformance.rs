//! One conformance suite, run against every backend: the embedded log, a
//! real single Redis, and (for the whole-pipeline case) a Redis Cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use testbed_stream::AggregateStore as _;
use testbed_stream::aggregates::device_state::LABELS;
use testbed_stream::{
    AnyLog, AppendEvent, ApplyOutcome, EntryMeta, EventLog, MemoryLog, Op, Ops, Prune, RedisLog,
    StoreArgs,
};
use testbed_test_support::{RedisCluster, RedisServer};

/// A backend under test, with whatever keeps it alive.
struct Backend {
    log: AnyLog,
    _redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

fn args(partitions: u32, window: u64) -> StoreArgs {
    StoreArgs {
        partitions,
        dedupe_window: window,
        // Small, so the cases below slide it and wrap around it.
        producer_window: 16,
        redis_timeout: Duration::from_secs(2),
        ..StoreArgs::default()
    }
}

async fn memory(partitions: u32, window: u64) -> Backend {
    Backend {
        log: AnyLog::Memory(MemoryLog::new(&args(partitions, window))),
        _redis: None,
        _cluster: None,
    }
}

async fn redis(partitions: u32, window: u64) -> Backend {
    let server = RedisServer::start();
    let mut a = args(partitions, window);
    a.redis_url = Some(server.url());
    let log = AnyLog::Redis(RedisLog::connect(&a).await.unwrap());
    log.ensure_group().await.unwrap();
    Backend {
        log,
        _redis: Some(server),
        _cluster: None,
    }
}

async fn cluster(partitions: u32, window: u64) -> Backend {
    let cluster = RedisCluster::start();
    let mut a = args(partitions, window);
    a.redis_url = Some(cluster.url());
    a.redis_cluster = true;
    let log = AnyLog::Redis(RedisLog::connect(&a).await.unwrap());
    log.ensure_group().await.unwrap();
    Backend {
        log,
        _redis: None,
        _cluster: Some(cluster),
    }
}

/// The backend a conformance case runs on.
#[derive(Clone, Copy)]
enum Kind {
    Memory,
    Redis,
    /// A three-master Redis Cluster (for the cases run on it by name).
    Cluster,
}

impl Kind {
    /// A fresh backend of this kind: `partitions`, dedupe `window`.
    async fn start(self, partitions: u32, window: u64) -> Backend {
        match self {
            Kind::Memory => memory(partitions, window).await,
            Kind::Redis => redis(partitions, window).await,
            Kind::Cluster => cluster(partitions, window).await,
        }
    }
}

fn events<'a>(ids: &[&'a str]) -> Vec<AppendEvent<'a>> {
    ids.iter()
        .map(|id| AppendEvent {
            run_id: "",
            event_id: id,
            bytes: format!("payload-{id}").into_bytes().into(),
        })
        .collect()
}

/// Appends each of `ids` as an entry of its own to partition 0 and reads
/// them all for consumer `c`: entries pending, ready to apply.
async fn pending(log: &AnyLog, ids: &[&str]) -> Vec<testbed_stream::Entry> {
    append_each(log, ids).await;
    read_new(log, "c", 10).await
}

/// Appends each of `ids` as an entry of its own to partition 0.
async fn append_each(log: &AnyLog, ids: &[&str]) {
    for id in ids {
        log.append(0, &EntryMeta::default(), &events(&[id]))
            .await
            .unwrap();
    }
}

/// Reads up to `count` new entries of partition 0 for `consumer`, waiting
/// 100 ms at most for the first.
async fn read_new(log: &AnyLog, consumer: &str, count: usize) -> Vec<testbed_stream::Entry> {
    log.read(0, consumer, count, Duration::from_millis(100))
        .await
        .unwrap()
}

fn counter_ops(log: &AnyLog, partition: u32, field: &str, by: i64) -> Ops {
    let mut ops = Ops::default();
    let k = ops.key(log.keys().aggregate(partition, "test:counters"));
    ops.push(Op::HashIncr(k, field.to_owned(), by));
    ops.push(Op::HashMax(k, "max".to_owned(), by as f64));
    ops.push(Op::HashMin(k, "min".to_owned(), by as f64));
    ops.push(Op::Expire(k, 600));
    ops
}

async fn counters(log: &AnyLog, partition: u32) -> Vec<(String, String)> {
    log.read_hashes(&[log.keys().aggregate(partition, "test:counters")])
        .await
        .unwrap()
        .remove(0)
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            $(
                /// Conformance case on the embedded log.
                #[tokio::test]
                async fn $name() { super::$name(super::Kind::Memory).await }
            )*
        }
        mod redis_backend {
            $(
                /// Conformance case on a real single Redis.
                #[tokio::test]
                async fn $name() { super::$name(super::Kind::Redis).await }
            )*
        }
    };
}

conformance!(
    append_read_apply_counts_once,
    duplicates_are_dropped_at_append,
    dedupe_window_is_bounded,
    stale_entries_are_claimed_and_applied_once,
    dead_letter_acks_and_counts,
    trim_keeps_unacknowledged_entries,
    e2e_latency_is_recorded,
    batch_apply_is_all_or_nothing,
    merges_agree_across_backends,
    own_pending_entries_can_be_read_again,
    listed_entries_are_claimed_with_their_deliveries,
    consumers_are_listed_and_forgotten_only_when_idle_handed,
    producer_sequences_dedupe_batches,
    tracked_devices_are_capped,
);

/// The cap on tracked devices: new devices are admitted until it is
/// reached, then refused; tracked ones stay admitted; each partition
/// counts its own.
async fn tracked_devices_are_capped(kind: Kind) {
    let backend = kind.start(2, 100).await;
    let log = &backend.log;
    assert_eq!(
        log.admit_devices(0, &["a", "b"], 3).await.unwrap(),
        [true, true]
    );
    assert_eq!(
        log.admit_devices(0, &["c", "d", "a"], 3).await.unwrap(),
        [true, false, true],
        "the fourth new device is past the cap; a tracked one is not"
    );
    assert_eq!(log.admit_devices(0, &["d"], 3).await.unwrap(), [false]);
    assert_eq!(
        log.admit_devices(0, &["d"], 4).await.unwrap(),
        [true],
        "a higher cap admits it"
    );
    assert_eq!(
        log.admit_devices(1, &["d", "e"], 1).await.unwrap(),
        [true, false],
        "partitions count apart"
    );
    assert!(log.admit_devices(0, &[], 1).await.unwrap().is_empty());
}

async fn append_read_apply_counts_once(kind: Kind) {
    let b = kind.start(2, 1000).await;
    let log = &b.log;
    let meta = EntryMeta {
        producer_id: "p".into(),
        sequence: 7,
        ..Default::default()
    };
    let out = log
        .append(1, &meta, &events(&["a", "b", "c"]))
        .await
        .unwrap();
    assert!(out.entry_id.is_some());
    assert!(out.duplicates.is_empty());

    let read = log
        .read(1, "c1", 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    let entry = &read[0];
    assert_eq!(
        entry.events,
        vec![
            b"payload-a".to_vec(),
            b"payload-b".to_vec(),
            b"payload-c".to_vec()
        ]
    );
    assert_eq!(entry.partition, 1);
    assert_eq!(entry.deliveries, 1);
    use prost::Message as _;
    assert_eq!(EntryMeta::decode(entry.meta.as_slice()).unwrap(), meta);
    // Nothing more to read, and the other partition is empty.
    assert!(
        log.read(1, "c1", 10, Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        log.read(0, "c1", 10, Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty()
    );

    let pending = log.pending(1).await.unwrap();
    assert_eq!(pending.entries, 1);

    let ops = counter_ops(log, 1, "n", 3);
    assert_eq!(
        log.apply(entry.partition, std::slice::from_ref(entry), 3, &ops)
            .await
            .unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(
        log.apply(entry.partition, std::slice::from_ref(entry), 3, &ops)
            .await
            .unwrap(),
        ApplyOutcome::NotPending(vec![0])
    );
    let figures = log.figures(1).await.unwrap();
    assert_eq!(
        (figures.ingested, figures.processed, figures.backlog()),
        (3, 3, 0)
    );
    assert_eq!(
        counters(log, 1).await,
        vec![
            ("max".into(), "3".into()),
            ("min".into(), "3".into()),
            ("n".into(), "3".into())
        ]
    );
    assert_eq!(log.pending(1).await.unwrap().entries, 0);
}

async fn duplicates_are_dropped_at_append(kind: Kind) {
    let b = kind.start(1, 1000).await;
    let log = &b.log;
    let meta = EntryMeta::default();
    let out = log.append(0, &meta, &events(&["a", "b"])).await.unwrap();
    assert_eq!(out.backlog, Some(2), "the backlog after the append");
    // A retry of b with a new c, and c twice in the same batch.
    let out = log
        .append(0, &meta, &events(&["b", "c", "c"]))
        .await
        .unwrap();
    assert_eq!(out.duplicates, vec![0, 2]);
    assert_eq!(out.backlog, Some(3));
    // A batch of only duplicates appends nothing.
    let out = log.append(0, &meta, &events(&["a"])).await.unwrap();
    assert_eq!(out.entry_id, None);
    assert_eq!(out.duplicates, vec![0]);
    assert_eq!(out.backlog, Some(3));

    let read = read_new(log, "c", 10).await;
    let all: Vec<Vec<u8>> = read
        .iter()
        .flat_map(|e| e.events.iter().map(|b| b.to_vec()))
        .collect();
    assert_eq!(
        all,
        vec![
            b"payload-a".to_vec(),
            b"payload-b".to_vec(),
            b"payload-c".to_vec()
        ]
    );
    let figures = log.figures(0).await.unwrap();
    assert_eq!((figures.ingested, figures.duplicates), (3, 3));
}

async fn dedupe_window_is_bounded(kind: Kind) {
    let b = kind.start(1, 2).await;
    let log = &b.log;
    let meta = EntryMeta::default();
    log.append(0, &meta, &events(&["a", "b", "c"]))
        .await
        .unwrap();
    // Only the last two ids are remembered: c is a duplicate, a is not.
    let out = log.append(0, &meta, &events(&["c", "a"])).await.unwrap();
    assert_eq!(out.duplicates, vec![0]);
    assert_eq!(log.figures(0).await.unwrap().ingested, 4);
}

async fn stale_entries_are_claimed_and_applied_once(kind: Kind) {
    let b = kind.start(1, 1000).await;
    let log = &b.log;
    log.append(0, &EntryMeta::default(), &events(&["a", "b"]))
        .await
        .unwrap();
    let taken = read_new(log, "dead-worker", 10).await;
    assert_eq!(taken.len(), 1);
    // Not idle long enough yet.
    let none = log
        .claim_stale(0, "rescuer", Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert!(none.is_empty());
    let claimed = log
        .claim_stale(0, "rescuer", Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, taken[0].id);
    assert_eq!(claimed[0].deliveries, 2);
    assert_eq!(claimed[0].events, taken[0].events);

    let ops = counter_ops(log, 0, "n", 2);
    assert_eq!(
        log.apply(
            claimed[0].partition,
            std::slice::from_ref(&claimed[0]),
            2,
            &ops
        )
        .await
        .unwrap(),
        ApplyOutcome::Applied
    );
    // The original consumer wakes up and tries to apply too: nothing happens.
    assert_eq!(
        log.apply(taken[0].partition, std::slice::from_ref(&taken[0]), 2, &ops)
            .await
            .unwrap(),
        ApplyOutcome::NotPending(vec![0])
    );
    assert_eq!(log.figures(0).await.unwrap().processed, 2);
    assert!(counters(log, 0).await.contains(&("n".into(), "2".into())));
}

async fn dead_letter_acks_and_counts(kind: Kind) {
    let b = kind.start(1, 1000).await;
    let log = &b.log;
    log.append(0, &EntryMeta::default(), &events(&["x", "y", "z"]))
        .await
        .unwrap();
    let read = read_new(log, "c", 10).await;
    assert_eq!(
        log.dead_letter(&read[0], 3, "undecodable", &Ops::default())
            .await
            .unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(
        log.dead_letter(&read[0], 3, "again", &Ops::default())
            .await
            .unwrap(),
        ApplyOutcome::NotPending(vec![0])
    );
    let ops = counter_ops(log, 0, "n", 3);
    assert_eq!(
        log.apply(read[0].partition, std::slice::from_ref(&read[0]), 3, &ops)
            .await
            .unwrap(),
        ApplyOutcome::NotPending(vec![0])
    );
    let figures = log.figures(0).await.unwrap();
    assert_eq!(
        (figures.dead_lettered, figures.processed, figures.backlog()),
        (3, 0, 0)
    );
}

async fn trim_keeps_unacknowledged_entries(kind: Kind) {
    let b = kind.start(1, 1000).await;
    let log = &b.log;
    let meta = EntryMeta::default();
    // Many entries so Redis' approximate trimming has whole nodes to drop.
    for i in 0..300 {
        log.append(0, &meta, &events(&[&format!("e{i}")]))
            .await
            .unwrap();
    }
    let first = read_new(log, "c", 1).await;
    let rest = read_new(log, "c", 1000).await;
    assert_eq!(rest.len(), 299);
    let ops = Ops::default();
    for entry in &rest {
        log.apply(entry.partition, std::slice::from_ref(entry), 1, &ops)
            .await
            .unwrap();
    }
    // The first entry is still pending: nothing at or after it may go.
    log.trim(0).await.unwrap();
    let claimed = log
        .claim_stale(0, "other", Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].events, first[0].events);
    log.apply(
        claimed[0].partition,
        std::slice::from_ref(&claimed[0]),
        1,
        &ops,
    )
    .await
    .unwrap();
    // Now everything is acked and may be trimmed; new appends still flow.
    log.trim(0).await.unwrap();
    log.append(0, &meta, &events(&["late"])).await.unwrap();
    let late = read_new(log, "c", 10).await;
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].events, vec![b"payload-late".to_vec()]);
    assert_eq!(log.figures(0).await.unwrap().processed, 300);
}

async fn e2e_latency_is_recorded(kind: Kind) {
    let b = kind.start(1, 1000).await;
    let log = &b.log;
    log.append(0, &EntryMeta::default(), &events(&["a", "b", "c", "d"]))
        .await
        .unwrap();
    let read = read_new(log, "c", 10).await;
    let mut ops = Ops::default();
    let key = ops.key(log.keys().e2e(0, 1));
    ops.e2e = vec![(key, 0, 4)];
    log.apply(read[0].partition, std::slice::from_ref(&read[0]), 4, &ops)
        .await
        .unwrap();
    let histogram = log
        .read_hashes(&[log.keys().e2e(0, 1)])
        .await
        .unwrap()
        .remove(0);
    let total: u64 = histogram
        .iter()
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 4, "{histogram:?}");
}

/// The device cap's admission script (admit.lua) on a three-master Redis
/// Cluster: one script per partition, each on its own slot's master.
#[tokio::test]
async fn tracked_devices_are_capped_on_a_cluster() {
    tracked_devices_are_capped(Kind::Cluster).await;
}

/// The core cases hold on a three-master Redis Cluster, with partitions
/// spread over its slots.
#[tokio::test]
async fn redis_cluster_backend_keeps_the_semantics() {
    let b = cluster(6, 1000).await;
    let log = &b.log;
    for p in 0..6 {
        let out = log
            .append(p, &EntryMeta::default(), &events(&["a", "b", "a"]))
            .await
            .unwrap();
        assert_eq!(out.duplicates, vec![2]);
        let read = log
            .read(p, "c", 10, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(read.len(), 1);
        let ops = counter_ops(log, p, "n", 2);
        assert_eq!(
            log.apply(read[0].partition, std::slice::from_ref(&read[0]), 2, &ops)
                .await
                .unwrap(),
            ApplyOutcome::Applied
        );
        assert_eq!(
            log.apply(read[0].partition, std::slice::from_ref(&read[0]), 2, &ops)
                .await
                .unwrap(),
            ApplyOutcome::NotPending(vec![0])
        );
        assert!(counters(log, p).await.contains(&("n".into(), "2".into())));
        let f = log.figures(p).await.unwrap();
        assert_eq!((f.ingested, f.processed, f.duplicates), (2, 2, 1));
        log.trim(p).await.unwrap();
        // An idempotent producer's append (a MULTI of a script, the XADD
        // and a script that undoes a duplicate's XADD) on the partition's
        // node; its retry leaves no entry behind.
        let meta = EntryMeta {
            producer_id: "sim-1".into(),
            sequence: 1,
            ..EntryMeta::default()
        };
        let first = log.append(p, &meta, &events(&["c"])).await.unwrap();
        assert!(first.entry_id.is_some());
        let retry = log.append(p, &meta, &events(&["c"])).await.unwrap();
        assert_eq!((retry.entry_id, retry.duplicates), (None, vec![0]));
        let read = log
            .read(p, "c", 10, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(read.len(), 1, "partition {p}");
    }
}

async fn script_flush(conn: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(conn)
        .await
        .unwrap();
}

/// An idempotent append whose bookkeeping script Redis has lost (a
/// restart, `SCRIPT FLUSH`) loads it and appends once; a duplicate or a
/// stale batch leaves no entry in the stream, and the append's decision key
/// is never left behind.
#[tokio::test]
async fn idempotent_appends_survive_a_script_flush() {
    let b = redis(1, 100).await;
    let log = &b.log;
    let url = b._redis.as_ref().map(|s| s.url()).unwrap();
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let meta = |sequence: u64| EntryMeta {
        producer_id: "sim-1".into(),
        sequence,
        ..EntryMeta::default()
    };
    let keys = testbed_stream::keys::Keys::new(&StoreArgs::default().key_prefix);
    let stream_len = |mut c: redis::aio::MultiplexedConnection| {
        let stream = keys.stream(0);
        async move {
            redis::cmd("XLEN")
                .arg(stream)
                .query_async::<u64>(&mut c)
                .await
                .unwrap()
        }
    };

    assert!(
        log.append(0, &meta(1), &events(&["a"]))
            .await
            .unwrap()
            .entry_id
            .is_some()
    );
    script_flush(&mut conn).await;
    // After the flush: a new batch appends once ...
    let out = log.append(0, &meta(2), &events(&["b"])).await.unwrap();
    assert!(out.entry_id.is_some() && out.duplicates.is_empty());
    assert_eq!(stream_len(conn.clone()).await, 2);
    // ... a retry of it, and of the first, add nothing ...
    script_flush(&mut conn).await;
    for sequence in [2, 1] {
        let out = log
            .append(0, &meta(sequence), &events(&["x"]))
            .await
            .unwrap();
        assert_eq!(
            (out.entry_id, out.duplicates),
            (None, vec![0]),
            "{sequence}"
        );
    }
    assert_eq!(stream_len(conn.clone()).await, 2);
    // ... nor does a batch older than the window (16 here).
    assert!(
        log.append(0, &meta(40), &events(&["c"]))
            .await
            .unwrap()
            .entry_id
            .is_some()
    );
    assert!(matches!(
        log.append(0, &meta(3), &events(&["d"])).await,
        Err(testbed_stream::StoreError::StaleSequence { .. })
    ));
    assert_eq!(stream_len(conn.clone()).await, 3);
    let decision: u64 = redis::cmd("EXISTS")
        .arg(keys.append_decision(0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(decision, 0);
    let f = log.figures(0).await.unwrap();
    assert_eq!((f.ingested, f.duplicates), (3, 2));
}

/// A blocked read wakes up as soon as an entry is appended.
#[tokio::test]
async fn blocked_read_wakes_on_append() {
    for b in [memory(1, 10).await, redis(1, 10).await] {
        let log = b.log.clone();
        let reader =
            tokio::spawn(async move { log.read(0, "c", 10, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.log
            .append(0, &EntryMeta::default(), &events(&["a"]))
            .await
            .unwrap();
        let read = tokio::time::timeout(Duration::from_secs(3), reader)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(read.len(), 1);
    }
}

/// The small key-value surface (control state, heartbeats, indexes)
/// behaves the same on both backends.
#[tokio::test]
async fn key_value_surface() {
    for b in [memory(1, 10).await, redis(1, 10).await] {
        let log = &b.log;
        let fields = vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned()),
        ];
        log.write_hash("h", &fields, Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(log.read_hashes(&["h".into()]).await.unwrap()[0], fields);
        assert_eq!(
            log.delete_hash_fields("h", &["a".into(), "zz".into()])
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            log.read_hashes(&["h".into()]).await.unwrap()[0],
            vec![("b".into(), "2".into())]
        );
        log.write_hash("gone", &fields, Some(Duration::from_millis(1)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(log.read_hashes(&["gone".into()]).await.unwrap()[0].is_empty());

        log.zset_set("z", "x", 3.0).await.unwrap();
        log.zset_set("z", "y", 1.0).await.unwrap();
        log.zset_set("z", "w", 2.0).await.unwrap();
        assert_eq!(
            log.read_zset("z").await.unwrap(),
            vec![("y".into(), 1.0), ("w".into(), 2.0), ("x".into(), 3.0)]
        );
        // A ranking read: the highest first, cut at the limit; scores of
        // given members, `None` for one not in the set.
        assert_eq!(
            log.zset_top("z", 2).await.unwrap(),
            vec![("x".into(), 3.0), ("w".into(), 2.0)]
        );
        assert_eq!(log.zset_top("z", 10).await.unwrap().len(), 3);
        assert!(log.zset_top("none", 10).await.unwrap().is_empty());
        assert_eq!(
            log.zset_scores("z", &["w".into(), "nobody".into(), "x".into()])
                .await
                .unwrap(),
            vec![Some(2.0), None, Some(3.0)]
        );
        assert_eq!(log.zset_remove_below("z", 2.0).await.unwrap(), 1);
        assert_eq!(log.read_zset("z").await.unwrap().len(), 2);
        assert!(log.read_zset("none").await.unwrap().is_empty());
    }
}

/// Duplicates and dead letters are counted in the run ledgers, atomically
/// with the append and the dead-letter move.
#[tokio::test]
async fn run_ledgers_count_duplicates_and_dead_letters() {
    for b in [memory(1, 100).await, redis(1, 100).await] {
        let log = &b.log;
        let with_run = |ids: &[&'static str]| -> Vec<AppendEvent<'static>> {
            events(ids)
                .into_iter()
                .map(|mut e| {
                    e.run_id = "r1";
                    e
                })
                .collect()
        };
        log.append(0, &EntryMeta::default(), &with_run(&["a", "b"]))
            .await
            .unwrap();
        let out = log
            .append(0, &EntryMeta::default(), &with_run(&["a", "b", "c"]))
            .await
            .unwrap();
        assert_eq!(out.duplicates, vec![0, 1]);
        let read = read_new(log, "c", 10).await;
        let mut ops = Ops::default();
        let run = ops.key(log.keys().run(0, "r1"));
        ops.push(Op::HashIncr(run, "dead_lettered".into(), 2));
        assert_eq!(
            log.dead_letter(&read[0], 2, "poison", &ops).await.unwrap(),
            ApplyOutcome::Applied
        );
        assert_eq!(
            log.dead_letter(&read[0], 2, "poison", &ops).await.unwrap(),
            ApplyOutcome::NotPending(vec![0])
        );
        let ledger = log
            .read_hashes(&[log.keys().run(0, "r1")])
            .await
            .unwrap()
            .remove(0);
        assert_eq!(
            ledger,
            vec![
                ("dead_lettered".to_owned(), "2".to_owned()),
                ("duplicates".to_owned(), "2".to_owned())
            ]
        );
        assert_eq!(log.figures(0).await.unwrap().dead_lettered, 2);
    }
}

/// A batch of entries is applied and acked as one step; if one of them was
/// already acked, nothing of the batch is applied, and the outcome names it.
async fn batch_apply_is_all_or_nothing(kind: Kind) {
    let b = kind.start(1, 1000).await;
    let log = &b.log;
    append_each(log, &["a", "b", "c"]).await;
    let read = read_new(log, "c", 10).await;
    assert_eq!(read.len(), 3);
    // The middle entry is acked on its own first (as if another consumer
    // claimed and applied it).
    let ops = counter_ops(log, 0, "n", 1);
    assert_eq!(
        log.apply(0, &read[1..2], 1, &ops).await.unwrap(),
        ApplyOutcome::Applied
    );
    let ops = counter_ops(log, 0, "n", 3);
    assert_eq!(
        log.apply(0, &read, 3, &ops).await.unwrap(),
        ApplyOutcome::NotPending(vec![1])
    );
    // Nothing of the refused batch happened: still two pending, n = 1.
    assert_eq!(log.pending(0).await.unwrap().entries, 2);
    assert!(counters(log, 0).await.contains(&("n".into(), "1".into())));
    // The rest, folded again without the acked entry.
    let rest = [read[0].clone(), read[2].clone()];
    let mut ops = counter_ops(log, 0, "n", 2);
    let key = ops.key(log.keys().e2e(0, 1));
    ops.e2e = vec![(key, 0, 1), (key, 1, 1)];
    assert_eq!(
        log.apply(0, &rest, 2, &ops).await.unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(log.pending(0).await.unwrap().entries, 0);
    assert!(counters(log, 0).await.contains(&("n".into(), "3".into())));
    let figures = log.figures(0).await.unwrap();
    assert_eq!((figures.processed, figures.backlog()), (3, 0));
    let histogram = log
        .read_hashes(&[log.keys().e2e(0, 1)])
        .await
        .unwrap()
        .remove(0);
    let total: u64 = histogram
        .iter()
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 2, "{histogram:?}");
}

/// Every kind of write, including one field written twice in a batch and
/// a large hash, gives the same values on every backend.
async fn merges_agree_across_backends(kind: Kind) {
    let b = kind.start(1, 1000).await;
    let log = &b.log;
    let read = pending(log, &["a", "b"]).await;
    let hash = log.keys().aggregate(0, "test:merge");
    // The same writes to a record (see keys.rs), beside another record of
    // the same container, read back the same.
    let record = log.keys().aggregate(0, "test:recs#r1");
    let other = log.keys().aggregate(0, "test:recs#r2");
    let zset = log.keys().aggregate(0, "test:top");
    let mut ops = Ops::default();
    let z = ops.key(zset.clone());
    let o = ops.key(other.clone());
    ops.push(Op::HashIncr(o, "n".into(), 1));
    for h in [ops.key(hash.clone()), ops.key(record.clone())] {
        merge_writes(&mut ops, h);
    }
    ops.push(Op::HashSet(o, "unit".into(), "°C".into()));
    ops.push(Op::ZIncr(z, "d1".into(), 1.5));
    ops.push(Op::ZIncr(z, "d1".into(), 2.0));
    ops.push(Op::ZMax(z, "d2".into(), 7.0));
    ops.push(Op::ZMax(z, "d2".into(), 5.0));
    ops.push(Op::Expire(z, 600));
    assert_eq!(
        log.apply(0, &read, 2, &ops).await.unwrap(),
        ApplyOutcome::Applied
    );
    let mut read = log
        .read_hashes(&[
            hash,
            record,
            other,
            log.keys().aggregate(0, "test:recs#none"),
        ])
        .await
        .unwrap();
    assert_eq!(read[0], read[1], "a record reads as the hash does");
    for fields in &read[..2] {
        check_merged(fields.iter().cloned().collect());
    }
    assert_eq!(
        read.remove(2),
        vec![
            ("n".to_owned(), "1".to_owned()),
            ("unit".to_owned(), "°C".to_owned())
        ]
    );
    assert!(read[2].is_empty(), "a missing record is an empty hash");
    assert_eq!(
        log.read_zset(&zset).await.unwrap(),
        vec![("d1".to_owned(), 3.5), ("d2".to_owned(), 7.0)]
    );
    // A container's records read together, by name, as each reads alone.
    let records = log
        .read_records(&log.keys().aggregate(0, "test:recs"))
        .await
        .unwrap();
    let names: Vec<&str> = records.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["r1", "r2"]);
    assert_eq!(records[0].1, read[1]);
    check_merged(records[0].1.iter().cloned().collect());
    assert_eq!(
        records[1].1,
        vec![
            ("n".to_owned(), "1".to_owned()),
            ("unit".to_owned(), "°C".to_owned())
        ]
    );
    assert!(
        log.read_records(&log.keys().aggregate(0, "test:none"))
            .await
            .unwrap()
            .is_empty()
    );
}

/// The writes [`merges_agree_across_backends`] makes to key `h`.
fn merge_writes(ops: &mut Ops, h: u16) {
    ops.push(Op::HashIncr(h, "n".into(), 2));
    ops.push(Op::HashIncr(h, "n".into(), 3));
    ops.push(Op::HashIncrFloat(h, "sum".into(), 0.25));
    ops.push(Op::HashIncrFloat(h, "sum".into(), 0.5));
    ops.push(Op::HashMin(h, "min".into(), 4.5));
    ops.push(Op::HashMin(h, "min".into(), 2.5));
    ops.push(Op::HashMax(h, "max".into(), 1.5));
    ops.push(Op::HashMax(h, "max".into(), 9.0));
    ops.push(Op::HashSet(h, "unit".into(), "W".into()));
    ops.push(Op::HashIncr(h, "big".into(), 1 << 40));
    ops.push(Op::HashSummary(h, "util".into(), [2.0, 0.75, 0.25, 0.5]));
    ops.push(Op::HashSummary(h, "util".into(), [1.0, 0.1, 0.1, 0.1]));
    // More writes to one key than one script group takes.
    for i in 0..2500 {
        ops.push(Op::HashIncr(h, format!("f{i}"), i));
    }
    // A field written again after those: a group of its own, applied after.
    ops.push(Op::HashIncr(h, "n".into(), 10));
    ops.push(Op::Expire(h, 600));
}

/// What [`merge_writes`] leaves.
fn check_merged(fields: std::collections::HashMap<String, String>) {
    assert_eq!(fields["n"], "15");
    assert_eq!(fields["sum"].parse::<f64>().unwrap(), 0.75);
    assert_eq!(fields["min"].parse::<f64>().unwrap(), 2.5);
    assert_eq!(fields["max"].parse::<f64>().unwrap(), 9.0);
    assert_eq!(fields["unit"], "W");
    assert_eq!(fields["big"], (1i64 << 40).to_string());
    assert_eq!(fields["f2499"], "2499");
    assert_eq!(
        testbed_stream::parse_summary(&fields["util"]),
        Some([3.0, 0.75 + 0.1, 0.1, 0.5])
    );
    assert_eq!(fields.len(), 2507);
}

/// A consumer can read again what was delivered to it and not acked (a
/// read whose reply was lost); other consumers' entries are not included.
async fn own_pending_entries_can_be_read_again(kind: Kind) {
    let b = kind.start(1, 1000).await;
    let log = &b.log;
    log.append(0, &EntryMeta::default(), &events(&["a"]))
        .await
        .unwrap();
    log.append(0, &EntryMeta::default(), &events(&["b"]))
        .await
        .unwrap();
    let first = read_new(log, "c1", 1).await;
    let second = read_new(log, "c2", 1).await;
    let again = log.read_own_pending(0, "c1", 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].events, vec![b"payload-a".to_vec()]);
    let ops = counter_ops(log, 0, "n", 1);
    assert_eq!(
        log.apply(0, &again, 1, &ops).await.unwrap(),
        ApplyOutcome::Applied
    );
    assert!(log.read_own_pending(0, "c1", 10).await.unwrap().is_empty());
    assert_eq!(
        log.read_own_pending(0, "c2", 10).await.unwrap()[0].id,
        second[0].id
    );
}

/// Listed pending entries are delivered again to the claimer, each with
/// its delivery count; an entry acked meanwhile is left out, and so is an
/// id that was never delivered. Reading one's own pending entries counts
/// a delivery too.
async fn listed_entries_are_claimed_with_their_deliveries(kind: Kind) {
    let b = kind.start(1, 1000).await;
    let log = &b.log;
    append_each(log, &["a", "b", "c"]).await;
    let read = read_new(log, "c1", 2).await;
    assert_eq!(read.len(), 2);
    assert!(read.iter().all(|e| e.deliveries == 1));
    let ids: Vec<String> = read.iter().map(|e| e.id.clone()).collect();

    // The consumer retries the first of them itself.
    let again = log.claim(0, "c1", &ids[..1]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, ids[0]);
    assert_eq!(again[0].deliveries, 2);
    assert_eq!(again[0].events, vec![b"payload-a".to_vec()]);
    let ops = counter_ops(log, 0, "n", 1);
    assert_eq!(
        log.apply(0, &again, 1, &ops).await.unwrap(),
        ApplyOutcome::Applied
    );

    // Another consumer takes both over: the acked one is left out, and an
    // entry never delivered (the third) is not pending, so not claimed.
    let third = read_new(log, "c3", 1).await;
    log.apply(0, &third, 1, &ops).await.unwrap();
    let mut listed = ids.clone();
    listed.push(third[0].id.clone());
    let taken = log.claim(0, "c2", &listed).await.unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].id, ids[1]);
    assert_eq!(taken[0].deliveries, 2);
    assert!(log.claim(0, "c2", &[]).await.unwrap().is_empty());

    // Reading one's own pending entries is a delivery, and says so.
    let own = log.read_own_pending(0, "c2", 10).await.unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].deliveries, 3);
    assert!(log.read_own_pending(0, "c1", 10).await.unwrap().is_empty());
}

/// The group's consumers are listed with what they hold; a consumer's
/// pending ids can be listed; one is forgotten only when it holds nothing.
async fn consumers_are_listed_and_forgotten_only_when_idle_handed(kind: Kind) {
    let b = kind.start(1, 1000).await;
    let log = &b.log;
    append_each(log, &["a", "b", "c"]).await;
    let mine = read_new(log, "c1", 2).await;
    let theirs = read_new(log, "c2", 1).await;
    let listed = log.consumers(0).await.unwrap();
    let pending: Vec<(&str, u64)> = listed
        .iter()
        .map(|c| (c.name.as_str(), c.pending))
        .collect();
    assert_eq!(pending, vec![("c1", 2), ("c2", 1)]);
    assert!(
        listed.iter().all(|c| c.idle < Duration::from_secs(5)),
        "{listed:?}"
    );
    let mut ids = log.pending_of(0, "c1", 10).await.unwrap();
    ids.sort();
    let mut want: Vec<String> = mine.iter().map(|e| e.id.clone()).collect();
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(log.pending_of(0, "c1", 1).await.unwrap().len(), 1);
    assert!(log.pending_of(0, "nobody", 10).await.unwrap().is_empty());

    assert!(
        !log.forget_consumer(0, "c1").await.unwrap(),
        "c1 holds entries"
    );
    assert_eq!(log.pending(0).await.unwrap().entries, 3, "nothing dropped");
    let ops = counter_ops(log, 0, "n", 2);
    log.apply(0, &mine, 2, &ops).await.unwrap();
    assert!(log.forget_consumer(0, "c1").await.unwrap());
    let names: Vec<String> = log
        .consumers(0)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["c2".to_owned()]);
    assert_eq!(theirs.len(), 1);
}

/// Batches of an idempotent producer are deduplicated by sequence within
/// the producer window (16 here): retries are whole duplicates, batches may
/// arrive out of order, ids repeated inside a batch are dropped, ids are
/// not compared across batches, and a sequence older than the window is
/// refused. The jumps below slide the window by less than its width, by
/// more, and across its wrap-around.
async fn producer_sequences_dedupe_batches(kind: Kind) {
    let b = kind.start(1, 1000).await;
    let log = &b.log;
    let meta = |sequence: u64| EntryMeta {
        producer_id: "sim-1".into(),
        sequence,
        ..EntryMeta::default()
    };
    let append = |sequence: u64, ids: &'static [&'static str]| async move {
        log.append(0, &meta(sequence), &events(ids)).await
    };
    let dups = |sequence: u64, ids: &'static [&'static str]| async move {
        append(sequence, ids).await.unwrap().duplicates
    };
    let stale = |sequence: u64| async move {
        match append(sequence, &["x"]).await {
            Err(testbed_stream::StoreError::StaleSequence {
                highest, window, ..
            }) => (highest, window),
            other => panic!("sequence {sequence}: expected StaleSequence, got {other:?}"),
        }
    };

    let first = append(1, &["a", "b"]).await.unwrap();
    assert!(first.entry_id.is_some());
    assert!(first.duplicates.is_empty());
    // A retry of sequence 1 is a duplicate as a whole and appends nothing.
    let retry = append(1, &["a", "b"]).await.unwrap();
    assert_eq!(
        (retry.entry_id, retry.duplicates, retry.backlog),
        (None, vec![0, 1], Some(2))
    );
    // A gap, then a late batch below the newest: both new.
    assert_eq!(
        dups(3, &["c", "c", "d"]).await,
        vec![1],
        "repeat in the batch"
    );
    assert_eq!(dups(2, &["e"]).await, Vec::<u32>::new());
    assert_eq!(dups(2, &["e"]).await, vec![0]);
    // Under a new sequence, an old event id is not a duplicate.
    assert_eq!(dups(4, &["a"]).await, Vec::<u32>::new());
    // A jump of the whole window forgets everything below it ...
    assert_eq!(dups(20, &["f"]).await, Vec::<u32>::new());
    assert_eq!(stale(4).await, (20, 16));
    assert_eq!(
        dups(5, &["g"]).await,
        Vec::<u32>::new(),
        "in the window, never seen"
    );
    // ... a slide by two drops 5 (and frees its slot for 21) ...
    assert_eq!(dups(22, &["h"]).await, Vec::<u32>::new());
    assert_eq!(stale(5).await, (22, 16));
    assert_eq!(dups(21, &["i"]).await, Vec::<u32>::new());
    assert_eq!(dups(21, &["i"]).await, vec![0]);
    // ... and a slide by 15 across the wrap-around clears the slots of 23..36
    // (20's among them), keeps 22 and drops 21.
    assert_eq!(dups(37, &["j"]).await, Vec::<u32>::new());
    assert_eq!(dups(36, &["k"]).await, Vec::<u32>::new(), "20's old slot");
    assert_eq!(dups(22, &["h"]).await, vec![0]);
    assert_eq!(stale(21).await, (37, 16));
    // Another producer has its own window.
    let other = EntryMeta {
        producer_id: "sim-2".into(),
        sequence: 1,
        ..EntryMeta::default()
    };
    let out = log.append(0, &other, &events(&["a"])).await.unwrap();
    assert!(out.duplicates.is_empty());

    let read = read_new(log, "c", 100).await;
    let all: Vec<String> = read
        .iter()
        .flat_map(|e| {
            e.events
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        })
        .collect();
    let want: Vec<String> = [
        "a", "b", "c", "d", "e", "a", "f", "g", "h", "i", "j", "k", "a",
    ]
    .iter()
    .map(|id| format!("payload-{id}"))
    .collect();
    assert_eq!(all, want);
    let figures = log.figures(0).await.unwrap();
    // 13 appended; duplicates: 2 (retry of 1) + 1 (repeat) + 1 + 1 + 1.
    assert_eq!((figures.ingested, figures.duplicates), (13, 6));
}

/// An idempotent producer's duplicates count in its run ledgers, the
/// repeats inside a new batch as well as a whole retried batch.
#[tokio::test]
async fn producer_duplicates_count_in_run_ledgers() {
    for b in [memory(1, 100).await, redis(1, 100).await] {
        let log = &b.log;
        let meta = EntryMeta {
            producer_id: "sim-r1".into(),
            sequence: 1,
            ..EntryMeta::default()
        };
        let mut batch = events(&["a", "b", "a", "c"]);
        for e in &mut batch[..3] {
            e.run_id = "r1";
        }
        assert_eq!(
            log.append(0, &meta, &batch).await.unwrap().duplicates,
            vec![2]
        );
        assert_eq!(
            log.append(0, &meta, &batch).await.unwrap().duplicates,
            vec![0, 1, 2, 3]
        );
        let ledger = log
            .read_hashes(&[log.keys().run(0, "r1")])
            .await
            .unwrap()
            .remove(0);
        assert_eq!(ledger, vec![("duplicates".to_owned(), "4".to_owned())]);
        let figures = log.figures(0).await.unwrap();
        assert_eq!((figures.ingested, figures.duplicates), (3, 5));
    }
}

/// Pruning an index below a score removes those members (lowest first, at
/// most the limit per call), atomically with their records, their place in
/// the id index and in the postings of the label pairs their state holds
/// (keys the script is not given, in the partition's slot: Redis Cluster
/// too); the others stay.
#[tokio::test]
async fn pruning_an_index_removes_its_records() {
    for b in [
        memory(1, 100).await,
        redis(1, 100).await,
        cluster(1, 100).await,
    ] {
        let log = &b.log;
        let read = pending(log, &["a"]).await;
        let keys = log.keys();
        let mut ops = Ops::default();
        let index = ops.key(keys.devices(0));
        let ids = ops.key(keys.device_ids(0));
        let arm = keys.label_devices(0, "arch", "a#m/64");
        let postings = ops.key(arm.clone());
        for (device, seen) in [("d1", 1000.0), ("d2", 2000.0), ("d3", 3000.0)] {
            let state = ops.key(keys.device(0, device));
            ops.push(Op::HashMax(state, "seen".into(), seen));
            ops.push(Op::HashSet(
                state,
                LABELS.into(),
                r#"{"arch":"a#m/64"}"#.into(),
            ));
            ops.push(Op::Expire(state, 600));
            ops.push(Op::ZMax(index, device.into(), seen));
            ops.push(Op::ZMax(ids, device.into(), 0.0));
            ops.push(Op::ZMax(postings, device.into(), 0.0));
        }
        assert_eq!(
            log.apply(0, &read, 1, &ops).await.unwrap(),
            ApplyOutcome::Applied
        );
        let (devices, states, id_index) =
            (keys.devices(0), keys.device_states(0), keys.device_ids(0));
        let prune = |limit| Prune {
            index: &devices,
            below: 2500.0,
            records: &states,
            ids: &id_index,
            labels: LABELS,
            partition: 0,
            limit,
        };
        assert_eq!(log.prune_index(prune(1)).await.unwrap(), 1, "the limit");
        assert_eq!(
            log.zset_range_lex(&arm, None, 10).await.unwrap(),
            ["d2", "d3"],
            "the oldest left first"
        );
        assert_eq!(log.prune_index(prune(10)).await.unwrap(), 1);
        assert_eq!(log.prune_index(prune(10)).await.unwrap(), 0);
        assert_eq!(
            log.read_zset(&keys.devices(0)).await.unwrap(),
            vec![("d3".to_owned(), 3000.0)]
        );
        for set in [keys.device_ids(0), arm.clone()] {
            assert_eq!(log.zset_range_lex(&set, None, 10).await.unwrap(), ["d3"]);
        }
        let states = log
            .read_hashes(&[keys.device(0, "d1"), keys.device(0, "d3")])
            .await
            .unwrap();
        assert!(states[0].is_empty(), "d1's state left with it");
        assert_eq!(
            states[1],
            vec![
                (LABELS.to_owned(), r#"{"arch":"a#m/64"}"#.to_owned()),
                ("seen".to_owned(), "3000".to_owned())
            ]
        );
    }
}

/// A set of equal scores reads in byte order of its members, a page at a
/// time after a given member, and counts its members.
#[tokio::test]
async fn sorted_sets_read_by_member_in_pages() {
    for b in [memory(1, 100).await, redis(1, 100).await] {
        let log = &b.log;
        for m in ["b", "a:2", "a", "c#1", "B", "\u{e9}", "a:10"] {
            log.zset_set("lex", m, 0.0).await.unwrap();
        }
        assert_eq!(log.zset_len("lex").await.unwrap(), 7);
        assert_eq!(log.zset_len("none").await.unwrap(), 0);
        assert_eq!(
            log.zset_range_lex("lex", None, 3).await.unwrap(),
            ["B", "a", "a:10"]
        );
        assert_eq!(
            log.zset_range_lex("lex", Some("a:10"), 3).await.unwrap(),
            ["a:2", "b", "c#1"]
        );
        assert_eq!(
            log.zset_range_lex("lex", Some("c#1"), 3).await.unwrap(),
            ["\u{e9}"]
        );
        // A member not in the set resumes after where it would be.
        assert_eq!(
            log.zset_range_lex("lex", Some("a:3"), 1).await.unwrap(),
            ["b"]
        );
        assert!(
            log.zset_range_lex("lex", Some("\u{e9}"), 5)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            log.zset_range_lex("none", None, 5)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
