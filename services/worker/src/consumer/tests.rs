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
        let read = tokio::time::timeout(
            Duration::from_secs(30),
            consumer.read_batch(0, 1, &shutdown),
        )
        .await
        .expect("a full read waited for the linger");
        assert_eq!(read.unwrap().unwrap().len(), 2);
    }
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
