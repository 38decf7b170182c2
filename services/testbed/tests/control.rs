//! Cluster-wide worker control on two worker processes sharing one Redis:
//! a call on either replica steers both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Testbed;
use common::pipeline::{InProcess, event, test_minute, totals, wait_drained};
use testbed_ingest::IngestConfig;
use testbed_proto::v1::worker_control_service_client::WorkerControlServiceClient;
use testbed_proto::v1::{
    ClearFaultsRequest, Event, FailureFault, Fault, FaultScope, GetStatusRequest,
    GetStatusResponse, InjectFaultRequest, PauseRequest, ResumeRequest, SetConcurrencyRequest,
    WatchStatusRequest, WorkerState, fault::Effect,
};
use testbed_stream::{AnyLog, RedisLog, StoreArgs};
use testbed_test_support::RedisServer;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

fn start_worker(redis: &RedisServer) -> Testbed {
    let url = redis.url();
    let mut args = vec!["worker", "--redis-url", &url];
    args.extend(common::FAST_WORKER_FLAGS);
    args.extend([
        "--control-interval",
        "100ms",
        "--heartbeat-interval",
        "200ms",
        "--max-deliveries",
        "2",
    ]);
    Testbed::start(&args)
}

async fn control(tb: &Testbed) -> WorkerControlServiceClient<Channel> {
    WorkerControlServiceClient::new(tb.channel().await)
}

/// Polls GetStatus on `client` until `done` holds, within `limit`.
async fn status_within(
    limit: Duration,
    client: &mut WorkerControlServiceClient<Channel>,
    what: &str,
    done: impl Fn(&GetStatusResponse) -> bool,
) -> GetStatusResponse {
    let deadline = Instant::now() + limit;
    loop {
        let status = client
            .get_status(GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`status_within`] 5 s.
async fn status_until(
    client: &mut WorkerControlServiceClient<Channel>,
    what: &str,
    done: impl Fn(&GetStatusResponse) -> bool,
) -> GetStatusResponse {
    status_within(Duration::from_secs(5), client, what, done).await
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The `worker_faults_active` gauge of a worker process.
async fn faults_active(tb: &Testbed) -> f64 {
    let (_, text) = common::scrape(tb.metrics_addr, "text/plain;version=0.0.4").await;
    text.lines()
        .find(|l| l.starts_with("worker_faults_active"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn publish(pipe: &InProcess, events: &[Event]) {
    let mut client = pipe.client().await;
    for batch in events.chunks(100) {
        common::pipeline::publish(&mut client, batch.to_vec())
            .await
            .unwrap();
    }
}

struct Setup {
    redis: RedisServer,
    log: AnyLog,
    pipe: InProcess,
    a: Testbed,
    b: Testbed,
}

async fn setup() -> Setup {
    let redis = RedisServer::start();
    let args = StoreArgs {
        redis_url: Some(redis.url()),
        ..StoreArgs::default()
    };
    let log = AnyLog::Redis(RedisLog::connect(&args).await.unwrap());
    let pipe = InProcess::start(&log, IngestConfig::default(), None).await;
    let (a, b) = (start_worker(&redis), start_worker(&redis));
    for tb in [&a, &b] {
        tb.wait_serving("testbed.v1.WorkerControlService").await;
    }
    Setup {
        redis,
        log,
        pipe,
        a,
        b,
    }
}

/// GetStatus lists both replicas; Pause on one stops both, nothing is lost
/// while paused, and Resume on the other restarts both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_steer_every_replica() {
    let s = setup().await;
    let (mut ca, mut cb) = (control(&s.a).await, control(&s.b).await);
    let status = status_until(&mut ca, "two workers", |st| st.workers.len() == 2).await;
    for w in &status.workers {
        assert_eq!(w.state(), WorkerState::Running);
        assert!(!w.consumer_name.is_empty() && !w.arch.is_empty() && !w.version.is_empty());
    }

    let paused = ca
        .pause(PauseRequest {
            reason: "experiment".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        paused
            .state
            .as_ref()
            .map(|s| (s.paused, s.pause_reason.as_str())),
        Some((true, "experiment"))
    );
    // Control applies within a second on every replica.
    status_within(Duration::from_secs(1), &mut cb, "both paused", |st| {
        st.workers.len() == 2 && st.workers.iter().all(|w| w.state() == WorkerState::Paused)
    })
    .await;

    let minute = test_minute();
    let events: Vec<Event> = (0..500).map(|i| event("pause", i, 10, minute)).collect();
    publish(&s.pipe, &events).await;
    // Paused workers read nothing new: an absence, so it is watched for a
    // while, but a while the workers are seen to live through: three of
    // their heartbeats (every 100 ms) after the publish, each a pass of
    // their control loop, then the backlog must still be whole.
    let published_ms = unix_ms(SystemTime::now());
    status_until(&mut cb, "three heartbeats after the publish", |st| {
        st.workers.len() == 2
            && st.workers.iter().all(|w| {
                w.last_heartbeat_time.as_ref().is_some_and(|t| {
                    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000 >= published_ms + 300
                })
            })
    })
    .await;
    let t = totals(&s.log).await;
    assert_eq!((t.ingested, t.processed), (500, 0));
    let status = cb
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.group.unwrap().backlog, 500);

    let resumed = cb
        .resume(ResumeRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!resumed.state.unwrap().paused);
    let t = wait_drained(&s.log, 500, Duration::from_secs(30)).await;
    assert_eq!((t.ingested, t.processed), (500, 500));
    // Heartbeats carry each worker's count a little after the apply.
    let status = status_until(&mut ca, "running again, counts reported", |st| {
        st.workers.iter().all(|w| w.state() == WorkerState::Running)
            && st.workers.iter().map(|w| w.events_processed).sum::<u64>() >= 500
    })
    .await;
    assert_eq!(
        status
            .workers
            .iter()
            .map(|w| w.events_processed)
            .sum::<u64>(),
        500
    );
    drop(s.redis);
}

/// SetConcurrency reaches every replica; out of range is INVALID_ARGUMENT
/// naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_concurrency_applies_to_every_replica() {
    let s = setup().await;
    let (mut ca, mut cb) = (control(&s.a).await, control(&s.b).await);
    let r = ca
        .set_concurrency(SetConcurrencyRequest { concurrency: 7 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state.unwrap().concurrency, 7);
    status_within(
        Duration::from_secs(1),
        &mut cb,
        "concurrency 7 everywhere",
        |st| st.workers.len() == 2 && st.workers.iter().all(|w| w.concurrency == 7),
    )
    .await;
    for bad in [0, 257] {
        let err = ca
            .set_concurrency(SetConcurrencyRequest { concurrency: bad })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            err.get_details_bad_request().unwrap().field_violations[0].field,
            "concurrency"
        );
    }
    drop((s.pipe, s.log));
}

/// A failure fault scoped to some devices makes their entries fail, retry
/// and go to the dead-letter stream; other devices are processed; the fault
/// shows in GetStatus and expires by itself; ClearFaults removes faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_apply_everywhere_and_expire() {
    let s = setup().await;
    let (mut ca, mut cb) = (control(&s.a).await, control(&s.b).await);
    status_until(&mut ca, "two workers", |st| st.workers.len() == 2).await;
    let fault = Fault {
        scope: Some(FaultScope {
            device_prefix: "dev-0".into(),
            payload_kind: 0,
        }),
        effect: Some(Effect::Failure(FailureFault { ratio: 1.0 })),
        ..Default::default()
    };
    let injected = ca
        .inject_fault(InjectFaultRequest {
            fault: Some(fault.clone()),
            ttl: Some(prost_types::Duration {
                seconds: 3,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .fault
        .unwrap();
    assert!(injected.id.starts_with("f-") && injected.expire_time.is_some());
    let status = cb
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.desired.unwrap().faults, vec![injected.clone()]);
    // Both replicas have picked it up: their worker_faults_active gauge.
    for tb in [&s.a, &s.b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while faults_active(tb).await < 1.0 {
            assert!(
                Instant::now() < deadline,
                "a replica never took the fault up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let minute = test_minute();
    // Ten devices; dev-0 is the only one matching the prefix "dev-0".
    let events: Vec<Event> = (0..200).map(|i| event("fault", i, 10, minute)).collect();
    let mut client = s.pipe.client().await;
    for e in &events {
        common::pipeline::publish(&mut client, vec![e.clone()])
            .await
            .unwrap();
    }
    let t = wait_drained(&s.log, 200, Duration::from_secs(30)).await;
    assert_eq!((t.processed, t.dead_lettered), (180, 20));

    // The fault expires by itself.
    status_until(&mut ca, "fault expired", |st| {
        st.desired.as_ref().is_some_and(|d| d.faults.is_empty())
    })
    .await;

    // ClearFaults removes what is there.
    for _ in 0..2 {
        ca.inject_fault(InjectFaultRequest {
            fault: Some(fault.clone()),
            ttl: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
        })
        .await
        .unwrap();
    }
    let cleared = cb
        .clear_faults(ClearFaultsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cleared.cleared_count, 2);
    assert!(cleared.state.unwrap().faults.is_empty());

    let err = ca
        .inject_fault(InjectFaultRequest {
            fault: Some(fault),
            ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "ttl"
    );
}

/// WatchStatus streams updates at the interval and ends cleanly when the
/// client cancels; the replica keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_status_streams_until_cancelled() {
    let s = setup().await;
    let mut ca = control(&s.a).await;
    let mut stream = ca
        .watch_status(WatchStatusRequest {
            interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut times = Vec::new();
    for _ in 0..3 {
        let update = stream.next().await.unwrap().unwrap();
        assert!(update.group.is_some() && update.desired.is_some());
        times.push(update.time.unwrap());
    }
    assert!(
        times
            .windows(2)
            .all(|w| (w[1].seconds, w[1].nanos) > (w[0].seconds, w[0].nanos))
    );
    drop(stream);
    let err = ca
        .watch_status(WatchStatusRequest {
            interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 1_000_000,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "interval"
    );
    assert!(ca.get_status(GetStatusRequest {}).await.is_ok());
    drop((s.pipe, s.b));
}
