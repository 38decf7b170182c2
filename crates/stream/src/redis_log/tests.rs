//! Tests of the Redis backend's internals (the conformance tests in
//! `tests/` cover the trait on both backends).

use super::*;
use crate::model::{AppendEvent, EntryMeta};
use testbed_test_support::{RedisCluster, RedisServer};

async fn log_on(server: &RedisServer) -> RedisLog {
    let args = StoreArgs {
        partitions: 1,
        redis_url: Some(server.url()),
        redis_timeout: Duration::from_secs(2),
        ..StoreArgs::default()
    };
    let log = RedisLog::connect(&args).await.unwrap();
    log.ensure_group().await.unwrap();
    log
}

/// `n` entries of partition 0 (one event each), read by one consumer.
async fn entries_of(log: &RedisLog, n: usize) -> Vec<Entry> {
    for i in 0..n {
        let id = format!("e{i}");
        let event = AppendEvent {
            run_id: "",
            event_id: &id,
            bytes: b"x".to_vec().into(),
        };
        log.append(0, &EntryMeta::default(), &[event])
            .await
            .unwrap();
    }
    let entries = log.read(0, "c", 10, Duration::ZERO).await.unwrap();
    assert_eq!(entries.len(), n);
    entries
}

/// Writes of every kind: a record, a hash, a sorted set.
fn writes(log: &RedisLog, by: i64) -> Ops {
    let keys = log.keys();
    let mut ops = Ops::default();
    let record = ops.key(keys.device(0, "d1"));
    let hash = ops.key(keys.run(0, "r"));
    let top = ops.key(keys.aggregate(0, "zset"));
    ops.push(Op::HashIncr(record, "n".into(), by));
    ops.push(Op::HashIncr(hash, "processed".into(), by));
    ops.push(Op::ZIncr(top, "d1".into(), by as f64));
    ops
}

async fn totals(log: &RedisLog) -> (String, String, f64) {
    let keys = log.keys();
    let hashes = log
        .read_hashes(&[keys.device(0, "d1"), keys.run(0, "r")])
        .await
        .unwrap();
    let top = log.read_zset(&keys.aggregate(0, "zset")).await.unwrap();
    (hashes[0][0].1.clone(), hashes[1][0].1.clone(), top[0].1)
}

/// An apply whose values were read before another apply of the
/// partition is refused by the script, changes nothing, and the apply
/// then merged in the script counts both exactly once.
#[tokio::test]
async fn merged_apply_that_raced_falls_back_to_the_script() {
    let server = RedisServer::start();
    let log = log_on(&server).await;
    let entries = entries_of(&log, 2).await;
    let (first, second) = (writes(&log, 2), writes(&log, 3));

    let stale = log.merged(0, &first).await.unwrap();
    assert_eq!(
        log.apply(0, &entries[1..], 1, &second).await.unwrap(),
        ApplyOutcome::Applied
    );
    let raced = log
        .commit_merged(0, &entries[..1], 1, &first, &stale)
        .await
        .unwrap();
    assert_eq!(raced, None, "a stale read must be refused");
    applies_once_after_a_refusal(&log, &entries[..1], &first, 3, 5).await;
}

/// After a refused apply of `entry`, the totals are `before` and the
/// entry is still pending; applied again (merged in the script), it
/// counts once: `after`, nothing pending.
async fn applies_once_after_a_refusal(
    log: &RedisLog,
    entry: &[Entry],
    ops: &Ops,
    before: i64,
    after: i64,
) {
    let expect = |n: i64| (n.to_string(), n.to_string(), n as f64);
    assert_eq!(totals(log).await, expect(before));
    assert_eq!(log.pending(0).await.unwrap().entries, 1, "not acked");
    assert_eq!(
        log.apply(0, entry, 1, ops).await.unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(totals(log).await, expect(after));
    assert_eq!(log.pending(0).await.unwrap().entries, 0);
}

/// An apply of another process that lands between the `WATCH` and
/// the `MULTI` of a watched apply makes Redis refuse the transaction:
/// nothing of it is written or acked, and the apply merged in the
/// script afterwards counts both exactly once. The merged values of a
/// single Redis are written without Lua.
#[tokio::test]
async fn a_write_between_watch_and_exec_refuses_the_apply() {
    let server = RedisServer::start();
    let log = log_on(&server).await;
    let other = log_on(&server).await;
    let entries = entries_of(&log, 3).await;
    let evalsha = calls(&server, "evalsha").await;
    log.apply(0, &entries[..1], 1, &writes(&log, 1))
        .await
        .unwrap();
    assert_eq!(calls(&server, "evalsha").await, evalsha, "no script");

    let ops = writes(&log, 10);
    let merged = log.merged(0, &ops).await.unwrap();
    let mut conn = connect_dedicated(&log.inner.args, Duration::from_secs(2))
        .await
        .unwrap();
    let watched = log
        .watch_apply(&mut conn, 0, &entries[1..2], &merged.version)
        .await
        .unwrap();
    let Watched::Ready { now_ms } = watched else {
        panic!("expected a ready apply, got {watched:?}");
    };
    assert_eq!(
        other
            .apply(0, &entries[2..], 1, &writes(&log, 100))
            .await
            .unwrap(),
        ApplyOutcome::Applied
    );
    let refused = log
        .exec_apply(&mut conn, 0, &entries[1..2], 1, &ops, &merged, now_ms)
        .await
        .unwrap();
    assert_eq!(refused, None, "the transaction must be refused");
    applies_once_after_a_refusal(&log, &entries[1..2], &ops, 101, 111).await;
}

/// The pending check of a watched apply names the entries already
/// acked, and clears its `WATCH`: a later transaction on the same
/// connection is not refused for a write that came after it.
#[tokio::test]
async fn a_watched_apply_reports_entries_no_longer_pending() {
    let server = RedisServer::start();
    let log = log_on(&server).await;
    let entries = entries_of(&log, 3).await;
    log.apply(0, &entries[1..2], 1, &writes(&log, 1))
        .await
        .unwrap();
    let version = log.merged(0, &writes(&log, 1)).await.unwrap().version;
    let mut conn = connect_dedicated(&log.inner.args, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        log.watch_apply(&mut conn, 0, &entries, &version)
            .await
            .unwrap(),
        Watched::NotPending(vec![1])
    );
    assert_eq!(
        log.watch_apply(&mut conn, 0, &entries, "not-the-version")
            .await
            .unwrap(),
        Watched::Raced
    );
    log.apply(0, &entries[..1], 1, &writes(&log, 1))
        .await
        .unwrap();
    let mut tx = redis::pipe();
    tx.atomic().cmd("INCR").arg("unrelated");
    let ran: Option<Vec<i64>> = tx.query_async(&mut conn).await.unwrap();
    assert_eq!(ran, Some(vec![1]), "no WATCH left behind");
}

/// Histogram increments of one key and bucket are summed; the age of
/// an entry is taken from its id.
#[test]
fn e2e_increments_sum_per_key_and_bucket() {
    let mut ops = Ops::default();
    let a = ops.key("a".to_owned());
    let b = ops.key("b".to_owned());
    ops.e2e = vec![(a, 0, 5), (a, 1, 7), (b, 0, 1), (a, 2, 2)];
    let entry = |id: &str| Entry {
        id: id.to_owned(),
        partition: 0,
        meta: Vec::new(),
        events: Vec::new(),
        deliveries: 1,
    };
    let entries = [entry("1000-0"), entry("1000-1"), entry("900-0")];
    assert_eq!(
        e2e_increments(&ops, &entries, 1003),
        vec![
            (("a", latency_bucket(3)), 12),
            (("b", latency_bucket(3)), 1),
            (("a", latency_bucket(103)), 2),
        ]
    );
}

/// Calls of `command` the server has run (`INFO commandstats`).
async fn calls(server: &RedisServer, command: &str) -> u64 {
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// An apply that writes only what the previous apply of the partition
/// wrote reads nothing: it merges with the values it wrote, and the
/// script's version check stands for the read.
#[tokio::test]
async fn an_apply_merges_with_what_the_last_one_wrote_without_reading() {
    let server = RedisServer::start();
    let log = log_on(&server).await;
    let entries = entries_of(&log, 2).await;
    // The commit only reads the version; values are read by HMGET
    // (hashes, records) and ZMSCORE (sorted sets). The appends' script
    // made HMGETs of its own.
    let before = calls(&server, "hmget").await + calls(&server, "zmscore").await;
    log.apply(0, &entries[..1], 1, &writes(&log, 2))
        .await
        .unwrap();
    let reads = calls(&server, "hmget").await + calls(&server, "zmscore").await;
    assert!(reads > before, "the first apply reads");
    assert_eq!(
        log.apply(0, &entries[1..], 1, &writes(&log, 3))
            .await
            .unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(
        calls(&server, "hmget").await + calls(&server, "zmscore").await,
        reads,
        "no second read"
    );
    assert_eq!(totals(&log).await, ("5".into(), "5".into(), 5.0));
    assert_eq!(log.pending(0).await.unwrap().entries, 0);
}

/// A value that an apply leaves as it was is not sent: a key whose
/// every write is unchanged costs no `HSET` or `ZADD` (only its
/// expiry), whether the value was known from the last apply or read.
#[tokio::test]
async fn unchanged_values_are_not_written() {
    let server = RedisServer::start();
    let log = log_on(&server).await;
    let fresh = log_on(&server).await;
    let entries = entries_of(&log, 3).await;
    let keys = log.keys();
    let ops = |seen: f64| {
        let mut ops = Ops::default();
        let state = ops.key(keys.device(0, "d1"));
        let index = ops.key(keys.devices(0));
        let run = ops.key(keys.run(0, "r"));
        ops.push(Op::HashMax(state, "seen".into(), seen));
        ops.push(Op::HashSet(state, "labels".into(), "{}".into()));
        ops.push(Op::ZMax(index, "d1".into(), seen));
        ops.push(Op::HashIncr(run, "processed".into(), 1));
        ops.push(Op::Expire(state, 600));
        ops
    };
    log.apply(0, &entries[..1], 1, &ops(5000.0)).await.unwrap();
    let (hset, zadd) = (calls(&server, "hset").await, calls(&server, "zadd").await);
    // Known from the last apply: only the run's counter is written.
    assert_eq!(
        log.apply(0, &entries[1..2], 1, &ops(5000.0)).await.unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(calls(&server, "hset").await, hset + 1);
    assert_eq!(calls(&server, "zadd").await, zadd);
    // Read by a process that never wrote them: the same.
    assert_eq!(
        fresh
            .apply(0, &entries[2..], 1, &ops(4000.0))
            .await
            .unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(calls(&server, "hset").await, hset + 2);
    assert_eq!(calls(&server, "zadd").await, zadd);
    let read = log
        .read_hashes(&[keys.device(0, "d1"), keys.run(0, "r")])
        .await
        .unwrap();
    assert_eq!(
        read[0],
        vec![
            ("labels".to_owned(), "{}".to_owned()),
            ("seen".to_owned(), "5000".to_owned())
        ]
    );
    assert_eq!(read[1], vec![("processed".to_owned(), "3".to_owned())]);
    assert_eq!(
        log.read_zset(&keys.devices(0)).await.unwrap(),
        vec![("d1".to_owned(), 5000.0)]
    );
    assert_eq!(server.command(&["TTL", &keys.device_states(0)]), ":600");
}

/// When another process applied to the partition in between, the
/// values this one wrote are stale: its next apply reads again (or the
/// script refuses and merges), and every apply counts exactly once.
#[tokio::test]
async fn written_values_are_not_used_after_another_writer() {
    let server = RedisServer::start();
    let log = log_on(&server).await;
    let other = log_on(&server).await;
    let entries = entries_of(&log, 7).await;
    let with_run = |by: i64, run: &str| {
        let mut ops = writes(&log, by);
        let k = ops.key(log.keys().run(0, run));
        ops.push(Op::HashIncr(k, "processed".into(), 7));
        ops
    };
    let apply = |log: &RedisLog, e: usize, ops: Ops| {
        let log = log.clone();
        let entry = entries[e..=e].to_vec();
        async move {
            assert_eq!(
                log.apply(0, &entry, 1, &ops).await.unwrap(),
                ApplyOutcome::Applied
            );
        }
    };
    apply(&log, 0, writes(&log, 1)).await;
    apply(&other, 1, writes(&log, 10)).await;
    // Every value is known, so nothing is read: the script refuses the
    // stale version and merges itself.
    apply(&log, 2, writes(&log, 100)).await;
    assert_eq!(totals(&log).await, ("111".into(), "111".into(), 111.0));
    apply(&log, 3, writes(&log, 1000)).await;
    apply(&other, 4, writes(&log, 10_000)).await;
    // A value that is not known is read with the version, which shows
    // the other writer: everything is read again.
    apply(&log, 5, with_run(100_000, "r2")).await;
    assert_eq!(
        totals(&log).await,
        ("111111".into(), "111111".into(), 111_111.0)
    );
    // Nobody else wrote: only the unknown value is read.
    let reads = calls(&server, "hmget").await;
    apply(&log, 6, with_run(1_000_000, "r3")).await;
    assert_eq!(calls(&server, "hmget").await, reads + 1, "one HMGET");
    assert_eq!(
        totals(&log).await,
        ("1111111".into(), "1111111".into(), 1_111_111.0)
    );
    let runs = log
        .read_hashes(&[log.keys().run(0, "r2"), log.keys().run(0, "r3")])
        .await
        .unwrap();
    for run in runs {
        assert_eq!(run, vec![("processed".to_owned(), "7".to_owned())]);
    }
    assert_eq!(log.pending(0).await.unwrap().entries, 0);
}

/// A written value is not used once its key may have expired.
#[test]
fn written_values_expire_with_their_key() {
    let now = std::time::Instant::now();
    let key = |expires| WrittenKey {
        expires,
        fields: [("f".to_owned(), b"1".to_vec())].into_iter().collect(),
    };
    let mut written = Written {
        version: "3".into(),
        keys: [
            ("forever".to_owned(), key(None)),
            ("soon".to_owned(), key(Some(now + EXPIRY_MARGIN / 2))),
            ("later".to_owned(), key(Some(now + EXPIRY_MARGIN * 10))),
        ]
        .into_iter()
        .collect(),
    };
    assert_eq!(written.take("forever", "f", now), Some(b"1".to_vec()));
    assert_eq!(written.take("later", "f", now), Some(b"1".to_vec()));
    assert_eq!(written.take("later", "f", now), None, "taken once");
    assert_eq!(written.take("soon", "f", now), None);
    assert_eq!(written.take("later", "g", now), None);
    assert_eq!(written.take("other", "f", now), None);
}

/// A prune of the partition moves its version too.
#[tokio::test]
async fn prune_moves_the_version() {
    let server = RedisServer::start();
    let log = log_on(&server).await;
    let entries = entries_of(&log, 2).await;
    let keys = log.keys().clone();
    let mut seen = Ops::default();
    let index = seen.key(keys.devices(0));
    let state = seen.key(keys.device(0, "old"));
    seen.push(Op::ZMax(index, "old".into(), 1.0));
    seen.push(Op::HashMax(state, "seen".into(), 1.0));
    log.apply(0, &entries[..1], 1, &seen).await.unwrap();

    let next = writes(&log, 1);
    let stale = log.merged(0, &next).await.unwrap();
    let removed = log
        .prune_index(crate::Prune {
            index: &keys.devices(0),
            below: 10.0,
            records: &keys.device_states(0),
            ids: &keys.device_ids(0),
            labels: crate::aggregates::device_state::LABELS,
            partition: 0,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let raced = log
        .commit_merged(0, &entries[1..], 1, &next, &stale)
        .await
        .unwrap();
    assert_eq!(raced, None);
}

/// What Lua's cmsgpack writes (integers of every width, float32 when
/// exact, float64) and what Rust writes both decode; text stays text.
#[test]
fn summaries_decode_from_msgpack() {
    assert_eq!(
        unpack_summary(&msgpack_summary(&[3.0, 0.3, -1.5, 7.25])),
        Some([3.0, 0.3, -1.5, 7.25])
    );
    // fixarray(4): positive fixint 3, int16 -300, float32 0.5, uint32 70000
    let lua = [
        0x94, 0x03, 0xd1, 0xfe, 0xd4, 0xca, 0x3f, 0x00, 0x00, 0x00, 0xce, 0x00, 0x01, 0x11, 0x70,
    ];
    assert_eq!(unpack_summary(&lua), Some([3.0, -300.0, 0.5, 70000.0]));
    assert_eq!(stored_text(lua.to_vec()), "3 -300 0.5 70000");
    assert_eq!(stored_text(b"rpm".to_vec()), "rpm");
    assert_eq!(unpack_summary(&[0x93, 1, 2, 3]), None);
}

/// A record as Lua's cmsgpack packs it reads back as hash text: integers
/// in full, floats in shortest form, strings as they are, summaries as
/// `count sum min max`, sorted by field; anything else is refused.
#[test]
fn records_decode_from_msgpack() {
    let mut packed = Vec::new();
    rmp::encode::write_map_len(&mut packed, 5).unwrap();
    rmp::encode::write_str(&mut packed, "n").unwrap();
    rmp::encode::write_uint(&mut packed, 1 << 40).unwrap();
    rmp::encode::write_str(&mut packed, "unit").unwrap();
    rmp::encode::write_str(&mut packed, "°C").unwrap();
    rmp::encode::write_str(&mut packed, "min").unwrap();
    rmp::encode::write_sint(&mut packed, -3).unwrap();
    rmp::encode::write_str(&mut packed, "avg").unwrap();
    rmp::encode::write_f64(&mut packed, 0.1).unwrap();
    rmp::encode::write_str(&mut packed, "util").unwrap();
    packed.extend_from_slice(&msgpack_summary(&[2.0, 0.75, 0.25, 0.5]));
    assert_eq!(
        unpack_record(&packed),
        Some(vec![
            ("avg".to_owned(), "0.1".to_owned()),
            ("min".to_owned(), "-3".to_owned()),
            ("n".to_owned(), (1u64 << 40).to_string()),
            ("unit".to_owned(), "°C".to_owned()),
            ("util".to_owned(), "2 0.75 0.25 0.5".to_owned()),
        ])
    );
    // Truncated, trailing bytes, not a map.
    assert_eq!(unpack_record(&packed[..packed.len() - 1]), None);
    let mut longer = packed.clone();
    longer.push(0);
    assert_eq!(unpack_record(&longer), None);
    assert_eq!(unpack_record(b"text"), None);
}

/// After another deployment resets the key prefix, the very next append
/// of a process that agreed with the old record (no health probe in
/// between) follows the new one: refused when its settings now disagree,
/// written when they still agree or the store came back empty. Both kinds
/// of append (by event id, and an idempotent producer's batch).
#[tokio::test]
async fn appends_follow_the_settings_epoch() {
    let server = RedisServer::start();
    let args = |partitions| StoreArgs {
        partitions,
        redis_url: Some(server.url()),
        redis_timeout: Duration::from_secs(2),
        ..StoreArgs::default()
    };
    let old = RedisLog::connect(&args(1)).await.unwrap();
    let mut sequence = 0;
    let mut append = async |log: &RedisLog, id: &str, idempotent: bool| {
        sequence += 1;
        let meta = EntryMeta {
            producer_id: if idempotent {
                "p".into()
            } else {
                String::new()
            },
            sequence,
            ..EntryMeta::default()
        };
        let event = AppendEvent {
            run_id: "",
            event_id: id,
            bytes: b"x".to_vec().into(),
        };
        log.append(0, &meta, &[event]).await
    };
    let stream_length = || server.command(&["XLEN", &old.keys().stream(0)]);
    for idempotent in [false, true] {
        assert!(
            append(&old, "a", idempotent)
                .await
                .unwrap()
                .entry_id
                .is_some()
        );

        // Emptied: the first append records the settings again.
        server.command(&["FLUSHALL"]);
        let outcome = append(&old, "b", idempotent).await.unwrap();
        assert!(outcome.entry_id.is_some(), "{outcome:?}");
        assert_eq!(stream_length(), ":1");

        // Reset and recorded by a process with the same settings.
        server.command(&["FLUSHALL"]);
        let _same = RedisLog::connect(&args(1)).await.unwrap();
        let outcome = append(&old, "c", idempotent).await.unwrap();
        assert!(outcome.entry_id.is_some(), "{outcome:?}");
        assert_eq!(stream_length(), ":1");

        // Reset and recorded with another partition count: refused at
        // once, and nothing written.
        server.command(&["FLUSHALL"]);
        let _other = RedisLog::connect(&args(2)).await.unwrap();
        let err = append(&old, "d", idempotent).await.unwrap_err();
        assert!(
            matches!(
                &err,
                StoreError::Disagreement { flag: "--partitions", ours, stored }
                    if ours == "1" && stored == "2"
            ),
            "{err:?}"
        );
        assert_eq!(stream_length(), ":0");
        server.command(&["FLUSHALL"]);
        old.agree_settings().await.unwrap();
    }
}

/// `--redis-topology-refresh` on Redis Cluster: the shared connection is
/// renewed in the background (a new generation, so a new slot map) while
/// calls go on answering through the renewals.
#[tokio::test]
async fn the_cluster_connection_is_renewed_periodically() {
    let cluster = RedisCluster::start();
    let args = StoreArgs {
        partitions: 2,
        redis_url: Some(cluster.url()),
        redis_cluster: true,
        redis_timeout: Duration::from_secs(2),
        redis_topology_refresh: Duration::from_millis(50),
        ..StoreArgs::default()
    };
    let log = RedisLog::connect(&args).await.unwrap();
    log.ensure_group().await.unwrap();
    let (_, first) = log.conn().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut appended = 0;
    loop {
        let id = format!("e{appended}");
        let event = AppendEvent {
            run_id: "",
            event_id: &id,
            bytes: b"x".to_vec().into(),
        };
        log.append(appended % 2, &EntryMeta::default(), &[event])
            .await
            .unwrap();
        appended += 1;
        let (_, now) = log.conn().await.unwrap();
        if now >= first + 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still generation {now} (from {first}) after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let figures = [log.figures(0).await.unwrap(), log.figures(1).await.unwrap()];
    assert_eq!(
        figures.iter().map(|f| f.ingested).sum::<u64>(),
        u64::from(appended)
    );
}

/// Off by default on a single Redis, and with `0s` on a cluster: the
/// connection keeps its generation.
#[tokio::test]
async fn a_single_redis_keeps_its_connection() {
    let server = RedisServer::start();
    let args = StoreArgs {
        partitions: 1,
        redis_url: Some(server.url()),
        redis_timeout: Duration::from_secs(2),
        redis_topology_refresh: Duration::from_millis(20),
        ..StoreArgs::default()
    };
    let log = RedisLog::connect(&args).await.unwrap();
    let (_, first) = log.conn().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, now) = log.conn().await.unwrap();
    assert_eq!(now, first);
}

/// `--redis-username` and `--redis-password-file` authenticate as a Redis
/// ACL user: the right password appends, a wrong one is refused by Redis
/// (the password really is sent), and an unreadable or empty file is a
/// configuration error before any connection.
#[tokio::test]
async fn authenticates_with_a_password_file() {
    let server = RedisServer::start_with(&[
        "--user",
        "testbed",
        "on",
        ">s3cret-pass",
        "~*",
        "&*",
        "+@all",
    ]);
    let dir = std::env::temp_dir().join(format!("redis-pass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let args = |password_file| StoreArgs {
        partitions: 1,
        redis_url: Some(server.url()),
        redis_timeout: Duration::from_secs(2),
        redis_username: Some("testbed".to_owned()),
        redis_password_file: Some(password_file),
        ..StoreArgs::default()
    };
    let event = AppendEvent {
        run_id: "",
        event_id: "e1",
        bytes: b"x".to_vec().into(),
    };

    let good = args(file("good", "s3cret-pass\n"));
    good.check().unwrap();
    let log = RedisLog::connect(&good).await.unwrap();
    log.append(0, &EntryMeta::default(), std::slice::from_ref(&event))
        .await
        .unwrap();

    let wrong = RedisLog::connect(&args(file("wrong", "not-it\n")))
        .await
        .unwrap();
    let err = wrong
        .append(0, &EntryMeta::default(), &[event])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Config(msg) if msg.contains("refused the credentials")),
        "{err:?}"
    );

    let err = args(file("empty", "\n")).check().unwrap_err();
    assert!(err.contains("first line is empty"), "{err}");
    let err = args(dir.join("missing")).check().unwrap_err();
    assert!(err.contains("--redis-password-file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
