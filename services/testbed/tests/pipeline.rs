//! The pipeline end to end on real stores: ingest → log → worker →
//! aggregates, exactly once, on the in-memory log, a single Redis and a
//! Redis Cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::pipeline::{
    InProcess, assert_folded, event, fast_worker, memory_log, publish, test_minute, totals,
    wait_drained,
};
use testbed_ingest::IngestConfig;
use testbed_proto::v1::{Event, PublishRequest, PublishStreamRequest};
use testbed_stream::AggregateStore as _;
use testbed_stream::{AnyLog, EventLog as _, RedisLog, StoreArgs};
use testbed_test_support::events::rejected;
use testbed_test_support::{RedisCluster, RedisServer};
use tokio_stream::StreamExt as _;
use tonic_types::StatusExt as _;

async fn redis_log(url: String, cluster: bool) -> AnyLog {
    let args = StoreArgs {
        redis_url: Some(url),
        redis_cluster: cluster,
        redis_timeout: Duration::from_millis(300),
        ..StoreArgs::default()
    };
    AnyLog::Redis(RedisLog::connect(&args).await.unwrap())
}

/// A `redis-server` of the test's own and the log over it.
async fn single_redis() -> (RedisServer, AnyLog) {
    let redis = RedisServer::start();
    let log = redis_log(redis.url(), false).await;
    (redis, log)
}

/// Publishes `events` over `streams` concurrent PublishStreams in batches
/// of `batch`, and checks every batch was acknowledged in order.
async fn publish_streams(pipe: &InProcess, events: &[Event], streams: usize, batch: usize) {
    let chunks: Vec<Vec<Event>> = events.chunks(batch).map(<[Event]>::to_vec).collect();
    let mut tasks = Vec::new();
    for s in 0..streams {
        let mine: Vec<(u64, Vec<Event>)> = chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| i % streams == s)
            .map(|(i, c)| (i as u64, c.clone()))
            .collect();
        let mut client = pipe.client().await;
        tasks.push(tokio::spawn(async move {
            let sequences: Vec<u64> = mine.iter().map(|(seq, _)| *seq).collect();
            let requests = tokio_stream::iter(mine.into_iter().map(|(sequence, events)| {
                PublishStreamRequest {
                    sequence,
                    events,
                    producer_id: String::new(),
                    trace_context: Default::default(),
                }
            }));
            let mut acks = client.publish_stream(requests).await.unwrap().into_inner();
            let mut acked = Vec::new();
            while let Some(ack) = acks.next().await {
                let ack = ack.unwrap();
                assert!(ack.status.is_none(), "batch refused: {:?}", ack.status);
                assert!(ack.rejections.is_empty(), "{:?}", ack.rejections);
                acked.push(ack.sequence);
            }
            assert_eq!(acked, sequences, "one ack per batch, in request order");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Sends 3000 events over four concurrent streams through ingest and a
/// worker on `log`, and checks every device's aggregates exactly.
async fn exact_counts_on(log: AnyLog) {
    let minute = test_minute();
    let events: Vec<Event> = (0..3000).map(|i| event("exact", i, 16, minute)).collect();
    let pipe = InProcess::start(&log, IngestConfig::default(), Some(fast_worker())).await;
    publish_streams(&pipe, &events, 4, 50).await;
    let figures = wait_drained(&log, 3000, Duration::from_secs(60)).await;
    assert_eq!(
        (figures.ingested, figures.processed, figures.duplicates),
        (3000, 3000, 0)
    );
    assert_folded(&log, &events, minute).await;
    pipe.stop().await;
}

/// Exact counts on the embedded in-memory log (what `testbed all` uses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_counts_in_memory() {
    exact_counts_on(memory_log()).await;
}

/// Exact counts on a real Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_counts_on_redis() {
    let redis = RedisServer::start();
    exact_counts_on(redis_log(redis.url(), false).await).await;
}

/// Exact counts on a three-master Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_counts_on_redis_cluster() {
    let cluster = RedisCluster::start();
    exact_counts_on(redis_log(cluster.url(), true).await).await;
}

/// Workers trim what the group has acknowledged: once everything is
/// processed, the streams shrink with nobody else calling trim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_are_trimmed() {
    let (redis, log) = single_redis().await;
    let minute = test_minute();
    let events: Vec<Event> = (0..2000).map(|i| event("trim", i, 16, minute)).collect();
    let pipe = InProcess::start(&log, IngestConfig::default(), Some(fast_worker())).await;
    // 200 batches: at least 200 entries, each batch one per partition it touches.
    publish_streams(&pipe, &events, 2, 10).await;
    wait_drained(&log, 2000, Duration::from_secs(60)).await;
    let length = || -> u64 {
        (0..log.partitions())
            .map(|p| {
                let reply = redis.command(&["XLEN", &log.keys().stream(p)]);
                reply.trim_start_matches(':').parse::<u64>().unwrap()
            })
            .sum()
    };
    // Approximate trimming keeps each stream's last, partly filled node.
    let deadline = Instant::now() + Duration::from_secs(30);
    while length() >= 100 {
        assert!(
            Instant::now() < deadline,
            "not trimmed: {} entries",
            length()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pipe.stop().await;
}

/// Re-publishing the same event ids is acknowledged and counted once.
#[tokio::test]
async fn republished_event_ids_count_once() {
    let (_redis, log) = single_redis().await;
    let pipe = InProcess::start(&log, IngestConfig::default(), Some(fast_worker())).await;
    let minute = test_minute();
    let events: Vec<Event> = (0..100).map(|i| event("dup", i, 5, minute)).collect();
    let mut client = pipe.client().await;
    let first = publish(&mut client, events.clone()).await.unwrap();
    assert_eq!((first.accepted_count, first.duplicate_count), (100, 0));
    // The whole batch again, then half of it mixed with 10 new events.
    let again = publish(&mut client, events.clone()).await.unwrap();
    assert_eq!((again.accepted_count, again.duplicate_count), (100, 100));
    let mut mixed: Vec<Event> = events[..50].to_vec();
    mixed.extend((100..110).map(|i| event("dup", i, 5, minute)));
    let third = publish(&mut client, mixed).await.unwrap();
    assert_eq!((third.accepted_count, third.duplicate_count), (60, 50));

    let figures = wait_drained(&log, 110, Duration::from_secs(30)).await;
    assert_eq!(
        (figures.ingested, figures.processed, figures.duplicates),
        (110, 110, 150)
    );
    let all: Vec<Event> = (0..110).map(|i| event("dup", i, 5, minute)).collect();
    assert_folded(&log, &all, minute).await;
    pipe.stop().await;
}

/// An idempotent producer's retried batch (same producer_id and sequence)
/// counts once on every partition it spans, with no event-id window at
/// all; a sequence older than the producer window is FAILED_PRECONDITION
/// with PreconditionFailure details, and one over 2^53-1 INVALID_ARGUMENT
/// naming `sequence`.
#[tokio::test]
async fn idempotent_producer_retries_count_once() {
    let redis = RedisServer::start();
    let url = redis.url();
    let log = AnyLog::Redis(
        RedisLog::connect(&StoreArgs {
            redis_url: Some(url),
            // The event-id window cannot be what catches the retries below.
            dedupe_window: 1,
            producer_window: 64,
            ..StoreArgs::default()
        })
        .await
        .unwrap(),
    );
    log.ensure_group().await.unwrap();
    let pipe = InProcess::start(&log, IngestConfig::default(), Some(fast_worker())).await;
    let minute = test_minute();
    let events: Vec<Event> = (0..100).map(|i| event("idem", i, 7, minute)).collect();
    let mut client = pipe.client().await;
    let request = |sequence: u64| PublishRequest {
        events: events.clone(),
        producer_id: "sim-test".into(),
        sequence,
    };
    let first = client.publish(request(1)).await.unwrap().into_inner();
    assert_eq!((first.accepted_count, first.duplicate_count), (100, 0));
    let retry = client.publish(request(1)).await.unwrap().into_inner();
    assert_eq!((retry.accepted_count, retry.duplicate_count), (100, 100));

    // Sequence 200, on every device's partition, slides the window past 1:
    // a retry of 1 is refused.
    let others: Vec<Event> = (100..107).map(|i| event("idem", i, 7, minute)).collect();
    let moved = PublishRequest {
        events: others.clone(),
        producer_id: "sim-test".into(),
        sequence: 200,
    };
    client.publish(moved).await.unwrap();
    let err = client.publish(request(1)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let failure = err.get_details_precondition_failure().unwrap();
    assert_eq!(failure.violations[0].r#type, "STALE_SEQUENCE");
    let err = client.publish(request(1 << 53)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "sequence"
    );

    let figures = wait_drained(&log, 107, Duration::from_secs(30)).await;
    assert_eq!(
        (figures.ingested, figures.processed, figures.duplicates),
        (107, 107, 100)
    );
    let mut all = events.clone();
    all.extend(others);
    assert_folded(&log, &all, minute).await;
    pipe.stop().await;
}

/// A batch with invalid events: the valid ones are counted, the invalid
/// ones reported by index with field and reason.
#[tokio::test]
async fn invalid_events_are_rejected_by_index() {
    let log = memory_log();
    let pipe = InProcess::start(&log, IngestConfig::default(), Some(fast_worker())).await;
    let minute = test_minute();
    let mut events: Vec<Event> = (0..6).map(|i| event("inv", i, 2, minute)).collect();
    events[1].device_id = String::new();
    events[4].observed_at = None;
    let response = publish(&mut pipe.client().await, events.clone())
        .await
        .unwrap();
    assert_eq!(response.accepted_count, 4);
    assert_eq!(
        rejected(&response.rejections),
        vec![
            (1, "events[1].device_id", "inv-1"),
            (4, "events[4].observed_at", "inv-4")
        ]
    );
    assert!(response.rejections.iter().all(|r| !r.reason.is_empty()));
    wait_drained(&log, 4, Duration::from_secs(10)).await;
    let valid: Vec<Event> = events
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != 1 && *i != 4)
        .map(|(_, e)| e)
        .collect();
    assert_folded(&log, &valid, minute).await;
    pipe.stop().await;
}

/// Envelope errors are INVALID_ARGUMENT with BadRequest naming the field.
#[tokio::test]
async fn empty_and_oversized_batches_are_invalid_argument() {
    let log = memory_log();
    let config = IngestConfig {
        max_batch: 3,
        ..IngestConfig::default()
    };
    let pipe = InProcess::start(&log, config, None).await;
    let mut client = pipe.client().await;
    let err = client.publish(PublishRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "events"
    );
    let minute = test_minute();
    let events: Vec<Event> = (0..4).map(|i| event("big", i, 2, minute)).collect();
    let err = publish(&mut client, events.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("at most 3"), "{}", err.message());
    // On a stream the refusal is the ack's status, and the stream goes on.
    let requests = tokio_stream::iter([
        PublishStreamRequest {
            sequence: 1,
            events: events.clone(),
            producer_id: String::new(),
            trace_context: Default::default(),
        },
        PublishStreamRequest {
            sequence: 2,
            events: events[..2].to_vec(),
            producer_id: String::new(),
            trace_context: Default::default(),
        },
    ]);
    let acks: Vec<_> = client
        .publish_stream(requests)
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    let acks: Vec<_> = acks.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        acks[0].status.as_ref().map(|s| s.code),
        Some(tonic::Code::InvalidArgument as i32)
    );
    assert_eq!(acks[0].accepted_count, 0);
    assert_eq!(
        (
            acks[1].sequence,
            acks[1].accepted_count,
            acks[1].status.is_none()
        ),
        (2, 2, true)
    );
    assert_eq!(totals(&log).await.ingested, 2);
    pipe.stop().await;
}

/// Over the backlog limit: RESOURCE_EXHAUSTED with RetryInfo, and nothing
/// of the refused request appended.
#[tokio::test]
async fn backlog_over_limit_is_resource_exhausted_and_appends_nothing() {
    let (_redis, log) = single_redis().await;
    let config = IngestConfig {
        backlog_limit: 5,
        retry_after: Duration::from_millis(700),
        ..IngestConfig::default()
    };
    // No worker: the backlog only grows.
    let pipe = InProcess::start(&log, config, None).await;
    let mut client = pipe.client().await;
    let minute = test_minute();
    // One device, one partition: its backlog is exactly what we sent.
    let batch = |from: u64| -> Vec<Event> {
        (from..from + 10)
            .map(|i| event("bp", i, 1, minute))
            .collect()
    };
    publish(&mut client, batch(0)).await.unwrap();
    let err = publish(&mut client, batch(10)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        err.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_millis(700))
    );
    assert_eq!(totals(&log).await.ingested, 10);

    // Once the backlog is gone (marked processed here: no worker runs), the
    // figure the append reported goes stale after --backlog-max-age and is
    // read again: requests are accepted.
    for partition in 0..log.partitions() {
        log.write_hash(
            &log.keys().stats(partition),
            &[("processed".to_owned(), "10".to_owned())],
            None,
        )
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let result = publish(&mut client, batch(10)).await;
        match result {
            Ok(r) => {
                assert_eq!(r.accepted_count, 10);
                break;
            }
            Err(err) if err.code() == tonic::Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "still refused: {err:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("{err:?}"),
        }
    }
    assert_eq!(totals(&log).await.ingested, 20);
    pipe.stop().await;
}

/// A request whose append fails half-way (one partition's stream is
/// broken) is an error; once fixed, the retry counts every event exactly once.
#[tokio::test]
async fn half_failed_append_retried_counts_exactly() {
    let (redis, log) = single_redis().await;
    log.ensure_group().await.unwrap();
    // Break partition 1's stream: XADD fails there, other partitions work.
    let broken = log.keys().stream(1);
    redis.command(&["DEL", &broken]);
    redis.command(&["SET", &broken, "not-a-stream"]);
    let pipe = InProcess::start(&log, IngestConfig::default(), None).await;
    let minute = test_minute();
    let events: Vec<Event> = (0..200).map(|i| event("half", i, 8, minute)).collect();
    let mut client = pipe.client().await;
    let err = publish(&mut client, events.clone()).await.unwrap_err();
    assert!(
        matches!(err.code(), tonic::Code::Internal | tonic::Code::Unavailable),
        "{err:?}"
    );
    let partial = totals(&log).await.ingested;
    assert!(partial > 0 && partial < 200, "half-way: {partial}");

    redis.command(&["DEL", &broken]);
    log.ensure_group().await.unwrap();
    let retry = publish(&mut client, events.clone()).await.unwrap();
    assert_eq!(
        (retry.accepted_count, u64::from(retry.duplicate_count)),
        (200, partial)
    );
    pipe.stop().await;

    // Now process everything and check the aggregates.
    let pipe = InProcess::start(&log, IngestConfig::default(), Some(fast_worker())).await;
    let figures = wait_drained(&log, 200, Duration::from_secs(30)).await;
    assert_eq!((figures.ingested, figures.processed), (200, 200));
    assert_folded(&log, &events, minute).await;
    pipe.stop().await;
}

/// Redis stopped: UNAVAILABLE within a second and health NOT_SERVING;
/// Redis back: SERVING and publishing again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_unavailable_then_recovers() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let (mut redis, log) = single_redis().await;
    let pipe = InProcess::start(&log, IngestConfig::default(), Some(fast_worker())).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", pipe.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel);
    let status = |mut health: HealthClient<_>| async move {
        health
            .check(HealthCheckRequest {
                service: "testbed.v1.IngestService".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status()
    };
    let wait_for = |want: ServingStatus| {
        let health = health.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if status(health.clone()).await == want {
                    return;
                }
                assert!(Instant::now() < deadline, "health never became {want:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(ServingStatus::Serving).await;
    let minute = test_minute();
    let mut client = pipe.client().await;
    publish(&mut client, vec![event("out", 0, 1, minute)])
        .await
        .unwrap();

    redis.stop();
    let started = Instant::now();
    let err = publish(&mut client, vec![event("out", 1, 1, minute)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    wait_for(ServingStatus::NotServing).await;
    // The process itself stays live.
    let overall = health
        .clone()
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(overall, ServingStatus::Serving);

    redis.restart();
    wait_for(ServingStatus::Serving).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match publish(&mut client, vec![event("out", 2, 1, minute)]).await {
            Ok(r) => {
                assert_eq!(r.accepted_count, 1);
                break;
            }
            Err(err) => assert!(Instant::now() < deadline, "never recovered: {err:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The restarted Redis is empty: the worker recreates its group and
    // processes the new event.
    let figures = wait_drained(&log, 1, Duration::from_secs(15)).await;
    assert_eq!((figures.ingested, figures.processed), (1, 1));
    pipe.stop().await;
}

/// An entry whose events cannot be decoded goes to the dead-letter stream
/// and does not block the partition.
#[tokio::test]
async fn poison_entries_are_dead_lettered() {
    let (redis, log) = single_redis().await;
    log.ensure_group().await.unwrap();
    let poison = testbed_stream::AppendEvent {
        run_id: "",
        event_id: "poison",
        bytes: vec![0xff, 0xff, 0xff].into(),
    };
    log.append(0, &Default::default(), &[poison]).await.unwrap();
    let minute = test_minute();
    let events: Vec<Event> = (0..50).map(|i| event("after", i, 4, minute)).collect();
    let pipe = InProcess::start(&log, IngestConfig::default(), Some(fast_worker())).await;
    publish(&mut pipe.client().await, events.clone())
        .await
        .unwrap();
    let figures = wait_drained(&log, 51, Duration::from_secs(30)).await;
    assert_eq!((figures.processed, figures.dead_lettered), (50, 1));
    let dlq = log.keys().dead_letter(0);
    assert_eq!(redis.command(&["XLEN", &dlq]), ":1");
    assert_folded(&log, &events, minute).await;
    pipe.stop().await;
}

/// The device cap (`--max-tracked-devices`) on the PublishStream path and
/// on a three-master Redis Cluster (admission is one script per
/// partition, each on its slot's master): a batch of 40 new devices under
/// a cap of 8 (2 per partition) is acknowledged OK with every event
/// accepted or rejected alone, each rejection naming its
/// `events[i].device_id`; the admitted devices keep publishing while new
/// ones are still refused; the worker processes exactly what was accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_cap_rejections_reach_stream_acks_on_a_cluster() {
    let cluster = RedisCluster::start();
    let log = redis_log(cluster.url(), true).await;
    let minute = test_minute();
    let ingest = IngestConfig {
        max_tracked_devices: 8,
        ..IngestConfig::default()
    };
    let pipe = InProcess::start(&log, ingest, Some(fast_worker())).await;
    let mut client = pipe.client().await;
    let batch = |sequence: u64, events: Vec<Event>| PublishStreamRequest {
        sequence,
        events,
        producer_id: String::new(),
        trace_context: Default::default(),
    };
    let first: Vec<Event> = (0..40).map(|i| event("cap", i, 40, minute)).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut acks = client
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(batch(1, first.clone())).await.unwrap();
    let ack = acks.next().await.unwrap().unwrap();
    assert!(ack.status.is_none(), "batch refused: {:?}", ack.status);
    assert_eq!(ack.sequence, 1);
    let accepted = ack.accepted_count as usize;
    assert_eq!(accepted + ack.rejections.len(), 40, "{ack:?}");
    assert!(
        (4..=8).contains(&accepted),
        "at most 2 per partition, and 40 devices fill most of 4 partitions: {accepted}"
    );
    for r in &ack.rejections {
        let i = r.index as usize;
        assert_eq!(r.field, format!("events[{i}].device_id"), "{r:?}");
        assert_eq!(r.event_id, first[i].event_id);
        assert!(r.reason.contains("--max-tracked-devices 8"), "{r:?}");
    }
    let refused: std::collections::HashSet<u32> = ack.rejections.iter().map(|r| r.index).collect();
    let admitted: Vec<&Event> = (0..40)
        .filter(|i| !refused.contains(&(*i as u32)))
        .map(|i| &first[i])
        .collect();

    // Admitted devices again (new event ids), then one new device.
    let mut second: Vec<Event> = admitted
        .iter()
        .map(|e| Event {
            event_id: format!("{}-again", e.event_id),
            ..(*e).clone()
        })
        .collect();
    second.push(Event {
        event_id: "cap-new".to_owned(),
        device_id: "dev-new".to_owned(),
        ..first[0].clone()
    });
    tx.send(batch(2, second.clone())).await.unwrap();
    let ack = acks.next().await.unwrap().unwrap();
    assert!(ack.status.is_none(), "batch refused: {:?}", ack.status);
    let last = second.len() - 1;
    assert_eq!(ack.accepted_count as usize, last, "{ack:?}");
    assert_eq!(ack.rejections.len(), 1, "{ack:?}");
    assert_eq!(ack.rejections[0].field, format!("events[{last}].device_id"));
    drop(tx);
    assert!(acks.next().await.is_none());

    let figures = wait_drained(&log, 2 * accepted as u64, Duration::from_secs(60)).await;
    assert_eq!(
        (figures.ingested, figures.processed, figures.duplicates),
        (2 * accepted as u64, 2 * accepted as u64, 0)
    );
    pipe.stop().await;
}
