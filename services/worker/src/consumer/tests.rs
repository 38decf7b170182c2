//! The consumer's batching, on the in-memory log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testbed_stream::{AppendEvent, MemoryLog, StoreArgs};

use super::*;

/// A consumer lingering an hour after a read, gathering at most two
/// entries, on an embedded log holding `entries` one-event entries in
/// partition 0.
async fn lingering_consumer(entries: usize) -> Consumer {
    consumer_with(entries, 2, 2).await
}

/// [`lingering_consumer`] gathering `count` entries in reads of `chunk`.
async fn consumer_with(entries: usize, count: u32, chunk: u32) -> Consumer {
    let log = AnyLog::Memory(MemoryLog::new(&StoreArgs::default()));
    log.ensure_group().await.unwrap();
    for i in 0..entries {
        let id = format!("e{i}");
        let event = AppendEvent {
            run_id: "",
            event_id: &id,
            bytes: Vec::new().into(),
        };
        log.append(0, &EntryMeta::default(), &[event])
            .await
            .unwrap();
    }
    let config = WorkerConfig {
        apply_linger: Duration::from_secs(3600),
        read_count: count,
        read_chunk: chunk,
        ..WorkerConfig::default()
    };
    Consumer::new(log, config, "c".to_owned())
}

/// A backlog is read batch after batch without waiting for the linger.
#[tokio::test]
async fn a_read_that_fills_its_batch_does_not_linger() {
    let consumer = lingering_consumer(5).await;
    let shutdown = CancellationToken::new();
    for _ in 0..2 {
        let read = read_without_linger(&consumer, &shutdown, "a full read").await;
        assert_eq!(read.len(), 2);
    }
}

/// One [`Consumer::read_batch`] of partition 0, which must return well
/// before the hour-long `--apply-linger`: `what` names it if it does not.
async fn read_without_linger(
    consumer: &Consumer,
    shutdown: &CancellationToken,
    what: &str,
) -> Vec<Entry> {
    tokio::time::timeout(Duration::from_secs(30), consumer.read_batch(0, 1, shutdown))
        .await
        .unwrap_or_else(|_| panic!("{what} waited for the linger"))
        .unwrap()
        .unwrap()
}

/// A batch is gathered in reads of `--read-chunk` entries: a backlog
/// fills it without waiting for the linger, in order, and the rest
/// stays for the next batch.
#[tokio::test]
async fn a_batch_is_gathered_in_chunks() {
    let consumer = consumer_with(7, 5, 2).await;
    let shutdown = CancellationToken::new();
    let first = tokio::time::timeout(
        Duration::from_secs(30),
        consumer.read_batch(0, 1, &shutdown),
    )
    .await
    .expect("a backlog waited for the linger")
    .unwrap()
    .unwrap();
    let ids: Vec<&str> = first.iter().map(|e| e.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids.len(), 5);
    assert_eq!(ids, sorted, "read in order");
    // The two left are short of a batch: read, then the linger (an
    // hour here).
    let rest = tokio::time::timeout(
        Duration::from_millis(300),
        consumer.read_batch(0, 1, &shutdown),
    )
    .await;
    assert!(rest.is_err(), "returned before the linger: {rest:?}");
    assert_eq!(consumer.log.pending(0).await.unwrap().entries, 7);
}

/// A read short of a batch waits for the linger to gather more.
#[tokio::test]
async fn a_read_short_of_its_batch_lingers() {
    let consumer = lingering_consumer(1).await;
    let shutdown = CancellationToken::new();
    let read = tokio::time::timeout(
        Duration::from_millis(300),
        consumer.read_batch(0, 1, &shutdown),
    )
    .await;
    assert!(read.is_err(), "returned before the linger: {read:?}");
}

/// Once applies are known, a short read lingers their mean times
/// `--apply-linger-factor`, not the whole `--apply-linger`.
#[tokio::test]
async fn a_short_read_lingers_by_the_pace_of_applies() {
    let consumer = lingering_consumer(1).await;
    consumer.pace.record(Duration::from_millis(40));
    let shutdown = CancellationToken::new();
    let read = read_without_linger(&consumer, &shutdown, "a paced read").await;
    assert_eq!(read.len(), 1);
}

/// Factor 0 applies what a read returns at once (group commit).
#[tokio::test]
async fn factor_zero_does_not_linger() {
    let mut consumer = lingering_consumer(1).await;
    let mut config = (*consumer.config).clone();
    config.apply_linger_factor = 0.0;
    consumer.config = Arc::new(config);
    consumer.pace.record(Duration::from_secs(60));
    let shutdown = CancellationToken::new();
    let read = read_without_linger(&consumer, &shutdown, "factor 0").await;
    assert_eq!(read.len(), 1);
}

mod retries {
    use prost::Message as _;
    use testbed_proto::v1::{Event, FailureFault, Fault, GpuSample, event::Payload};
    use testbed_stream::{AppendEvent, MemoryLog, StoreArgs};

    use super::*;

    /// A GPU sample of `device` at `secs`, with `labels`, encoded.
    fn gpu_event(id: &str, device: &str, secs: i64, util: f64, arch: &str) -> Vec<u8> {
        Event {
            event_id: id.into(),
            device_id: device.into(),
            observed_at: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            labels: [("arch".to_owned(), arch.to_owned())].into(),
            run_id: "run-1".into(),
            payload: Some(Payload::Gpu(GpuSample {
                utilization: util,
                ..Default::default()
            })),
        }
        .encode_to_vec()
    }

    /// A consumer retrying after 1..4 ms, dead-lettering past
    /// `max_deliveries`, on an embedded log holding `events` (one entry
    /// each) in partition 0.
    async fn consumer(events: &[Vec<u8>], max_deliveries: u64) -> Consumer {
        let log = AnyLog::Memory(MemoryLog::new(&StoreArgs::default()));
        log.ensure_group().await.unwrap();
        for (i, bytes) in events.iter().enumerate() {
            let id = format!("e{i}");
            let event = AppendEvent {
                run_id: "run-1",
                event_id: &id,
                bytes: bytes.clone().into(),
            };
            log.append(0, &EntryMeta::default(), &[event])
                .await
                .unwrap();
        }
        let config = WorkerConfig {
            apply_linger: Duration::ZERO,
            retry_initial_delay: Duration::from_millis(1),
            retry_max_delay: Duration::from_millis(4),
            max_deliveries,
            ..WorkerConfig::default()
        };
        Consumer::new(log, config, "c".to_owned())
    }

    /// A failure fault on every entry, in force for an hour.
    fn always_fail() -> Fault {
        let expire = SystemTime::now() + Duration::from_secs(3600);
        Fault {
            id: "f1".into(),
            effect: Some(Effect::Failure(FailureFault { ratio: 1.0 })),
            expire_time: Some(expire.into()),
            ..Default::default()
        }
    }

    /// Runs the consumer's due retries until none is scheduled (at most
    /// `rounds` times); how many rounds it took.
    async fn retry_until_done(c: &Consumer, rounds: usize) -> usize {
        for round in 0..rounds {
            let Some(at) = c.next_retry(0) else {
                return round;
            };
            tokio::time::sleep(at.saturating_duration_since(std::time::Instant::now())).await;
            c.retry_due(0).await;
        }
        panic!("retries still scheduled after {rounds} rounds");
    }

    /// Delays double from the first to the cap, and jitter shortens each
    /// by at most half; no delivery count overflows.
    #[test]
    fn backoff_doubles_to_its_cap_with_at_most_half_jitter() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut rng = rand::rng();
        for (deliveries, nominal) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (5, 1600),
            (6, 2000),
            (1000, 2000),
        ] {
            let nominal = Duration::from_millis(nominal);
            for _ in 0..200 {
                let d = backoff(deliveries, initial, max, &mut rng);
                assert!(d <= nominal && d >= nominal / 2, "{deliveries}: {d:?}");
            }
        }
    }

    /// The arithmetic README states: with the defaults, ten deliveries
    /// span 11.1 s without jitter.
    #[test]
    fn the_default_retry_budget() {
        let c = WorkerConfig::default();
        assert_eq!(c.max_deliveries, 10);
        assert_eq!(
            retry_budget(c.max_deliveries, c.retry_initial_delay, c.retry_max_delay),
            Duration::from_millis(11_100)
        );
        assert_eq!(
            retry_budget(5, c.retry_initial_delay, c.retry_max_delay),
            Duration::from_millis(1_500)
        );
    }

    /// An entry that fails is left pending and retried by its own
    /// consumer, each retry a counted delivery; once the fault is gone it
    /// is applied, once.
    #[tokio::test]
    async fn a_failed_entry_is_retried_by_its_consumer_until_applied() {
        let c = consumer(&[gpu_event("a", "d1", 60, 0.5, "arm64")], 10).await;
        c.local().set_faults(vec![always_fail()]);
        let read = c
            .log()
            .read(0, "c", 10, Duration::from_millis(10))
            .await
            .unwrap();
        let failed = c.process(0, read).await;
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0.reason, RetryReason::InjectedFault);
        assert_eq!((failed[0].0.deliveries, failed[0].1), (1, 1));
        c.schedule_retries(0, failed);
        for _ in 0..2 {
            let at = c.next_retry(0).expect("scheduled");
            tokio::time::sleep(at.saturating_duration_since(std::time::Instant::now())).await;
            c.retry_due(0).await;
        }
        assert_eq!(c.figures().fault_failures.load(Ordering::Relaxed), 3);
        assert_eq!(c.log().pending(0).await.unwrap().entries, 1);
        c.local().set_faults(Vec::new());
        assert_eq!(retry_until_done(&c, 10).await, 1);
        assert_eq!(c.figures().retried_entries.load(Ordering::Relaxed), 3);
        assert_eq!(c.figures().processed.load(Ordering::Relaxed), 1);
        assert_eq!(c.figures().dead_lettered.load(Ordering::Relaxed), 0);
        assert_eq!(c.log().pending(0).await.unwrap().entries, 0);
        assert_eq!(c.log().figures(0).await.unwrap().processed, 1);
    }

    /// An entry failing every delivery is dead-lettered at the delivery
    /// after `--max-deliveries`, with that reason, and nothing is left
    /// pending or scheduled.
    #[tokio::test]
    async fn an_entry_failing_every_delivery_is_dead_lettered() {
        let c = consumer(&[gpu_event("a", "d1", 60, 0.5, "arm64")], 3).await;
        c.local().set_faults(vec![always_fail()]);
        let read = c
            .log()
            .read(0, "c", 10, Duration::from_millis(10))
            .await
            .unwrap();
        let failed = c.process(0, read).await;
        c.schedule_retries(0, failed);
        assert_eq!(retry_until_done(&c, 20).await, 3);
        assert_eq!(c.figures().fault_failures.load(Ordering::Relaxed), 3);
        assert_eq!(c.figures().dead_lettered.load(Ordering::Relaxed), 1);
        assert_eq!(c.figures().processed.load(Ordering::Relaxed), 0);
        assert_eq!(c.log().pending(0).await.unwrap().entries, 0);
        let AnyLog::Memory(log) = c.log() else {
            unreachable!()
        };
        let dead = log.dead_letters(0);
        assert_eq!(dead.len(), 1);
        assert!(
            dead[0]
                .1
                .contains("delivered 4 times, over --max-deliveries 3"),
            "{dead:?}"
        );
    }

    /// Retries apply a device's entries out of order. Every aggregate but
    /// the device's labels is a sum, a minimum or a maximum, so the order
    /// changes nothing; labels are the last applied (README says so).
    #[tokio::test]
    async fn applying_out_of_order_changes_no_aggregate_but_labels() {
        let events = [
            gpu_event("a", "d1", 60, 0.2, "arm64"),
            gpu_event("b", "d1", 70, 0.9, "armv7"),
        ];
        let mut figures = Vec::new();
        for order in [[0usize, 1], [1, 0]] {
            let c = consumer(&events, 10).await;
            let mut read = c
                .log()
                .read(0, "c", 10, Duration::from_millis(10))
                .await
                .unwrap();
            assert_eq!(read.len(), 2);
            for i in order {
                assert!(c.process(0, vec![read[i].clone()]).await.is_empty());
            }
            read.clear();
            let keys = c.log().keys();
            let hashes = c
                .log()
                .read_hashes(&[keys.device_minute(0, "d1", 1), keys.device(0, "d1")])
                .await
                .unwrap();
            figures.push(hashes);
        }
        assert!(!figures[0][0].is_empty(), "device-minute written");
        assert_eq!(figures[0][0], figures[1][0], "device-minute figures");
        let field = |hash: &Vec<(String, String)>, name: &str| {
            hash.iter().find(|(f, _)| f == name).map(|(_, v)| v.clone())
        };
        assert_eq!(field(&figures[0][1], "seen"), field(&figures[1][1], "seen"));
        assert_eq!(field(&figures[0][1], "seen").as_deref(), Some("70000"));
        assert_ne!(
            field(&figures[0][1], "labels"),
            field(&figures[1][1], "labels")
        );
    }
}

/// The group's members are listed when the live consumers change, not
/// every round; nothing is judged before the follower has read the
/// heartbeats.
#[tokio::test]
async fn members_are_listed_when_the_live_consumers_change() {
    let consumer = lingering_consumer(0).await;
    assert!(!consumer.take_over_due(), "no heartbeats read yet");
    let live = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
    consumer.set_live_consumers(live(&["a", "b"]));
    assert!(consumer.take_over_due(), "first look");
    assert!(!consumer.take_over_due(), "nothing changed");
    consumer.set_live_consumers(live(&["a", "b"]));
    assert!(!consumer.take_over_due(), "the same names again");
    consumer.set_live_consumers(live(&["a"]));
    assert!(consumer.take_over_due(), "b's heartbeat lapsed");
    assert!(!consumer.take_over_due());
}
