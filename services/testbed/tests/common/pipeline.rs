//! Pipeline harness: ingest and workers in-process on a given log, event
//! builders with known expected aggregates, and readers for those aggregates.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testbed_ingest::IngestConfig;
use testbed_proto::v1::ingest_service_client::IngestServiceClient;
use testbed_proto::v1::{
    Event, GpuSample, Metric, PublishRequest, PublishResponse, TokenUsage, event::Payload,
};
use testbed_server::{CancellationToken, GrpcServer};
use testbed_stream::AggregateStore as _;
use testbed_stream::{AnyLog, EventLog as _, MemoryLog, PartitionFigures, StoreArgs, partition_of};
use testbed_worker::WorkerConfig;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Ingest and query (and optionally a worker with its control API) served
/// in-process on 127.0.0.1:0.
pub struct InProcess {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl InProcess {
    pub async fn start(log: &AnyLog, ingest: IngestConfig, worker: Option<WorkerConfig>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let mut server = GrpcServer::new();
        server.set_probe_interval(Duration::from_millis(50));
        testbed_ingest::register(&mut server, &ingest, log.clone(), shutdown.clone()).await;
        testbed_query::register(
            &mut server,
            &Default::default(),
            log.clone(),
            shutdown.clone(),
        )
        .await;
        if let Some(worker) = worker {
            testbed_worker::register(&mut server, &worker, log.clone(), shutdown.clone()).await;
        }
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            server
                .serve(listener, token, Duration::from_secs(5))
                .await
                .unwrap();
        });
        Self {
            addr,
            shutdown,
            handle: Some(handle),
        }
    }

    pub async fn client(&self) -> IngestServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        IngestServiceClient::new(channel)
    }

    /// Stops the server and re-raises a panic of its task.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A worker config that claims quickly, for tests.
pub fn fast_worker() -> WorkerConfig {
    WorkerConfig {
        claim_idle: Duration::from_millis(500),
        maintenance_interval: Duration::from_millis(100),
        trim_interval: Duration::from_millis(100),
        read_block: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}

/// The minute (Unix) all test events fall in: 30 s ago, truncated.
pub fn test_minute() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now - 30).div_euclid(60)
}

/// Event `i` of a test run: device `dev-(i % devices)`, kind by `i % 3`,
/// all observed within [`test_minute`].
pub fn event(run: &str, i: u64, devices: u64, minute: i64) -> Event {
    let payload = match i % 3 {
        0 => Payload::Gpu(GpuSample {
            gpu_index: 0,
            utilization: (i % 10) as f64 / 10.0,
            memory_used_bytes: 1024,
            memory_total_bytes: 4096,
            temperature_celsius: 40.0 + (i % 7) as f64,
            power_watts: 100.0 + (i % 50) as f64,
        }),
        1 => Payload::Tokens(TokenUsage {
            model: format!("model-{}", i % 2),
            tenant: format!("tenant-{}", i % 3),
            prompt_tokens: 10 + i % 13,
            completion_tokens: 5 + i % 11,
            latency: Some(prost_types::Duration {
                seconds: 0,
                nanos: 20_000_000,
            }),
        }),
        _ => Payload::Metric(Metric {
            name: "fan_speed".into(),
            value: (i % 100) as f64,
            unit: "1".into(),
        }),
    };
    Event {
        event_id: format!("{run}-{i}"),
        device_id: format!("dev-{}", i % devices),
        observed_at: Some(prost_types::Timestamp {
            seconds: minute * 60 + (i % 59) as i64,
            nanos: 0,
        }),
        labels: [(
            "arch".to_owned(),
            if i.is_multiple_of(2) {
                "amd64"
            } else {
                "arm64"
            }
            .to_owned(),
        )]
        .into(),
        run_id: run.to_owned(),
        payload: Some(payload),
    }
}

/// What the aggregates of one device must show.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Expected {
    pub events: u64,
    pub gpu: u64,
    pub tokens: u64,
    pub prompt: u64,
    pub completion: u64,
    pub metrics: u64,
}

/// The expected aggregates of `events`, by device.
pub fn expected(events: &[Event]) -> BTreeMap<String, Expected> {
    let mut out: BTreeMap<String, Expected> = BTreeMap::new();
    for e in events {
        let x = out.entry(e.device_id.clone()).or_default();
        x.events += 1;
        match &e.payload {
            Some(Payload::Gpu(_)) => x.gpu += 1,
            Some(Payload::Tokens(t)) => {
                x.tokens += 1;
                x.prompt += t.prompt_tokens;
                x.completion += t.completion_tokens;
            }
            Some(Payload::Metric(_)) => x.metrics += 1,
            None => {}
        }
    }
    out
}

/// What the aggregates of each device in `minute` show.
pub async fn actual(
    log: &AnyLog,
    devices: impl IntoIterator<Item = String>,
    minute: i64,
) -> BTreeMap<String, Expected> {
    let mut out = BTreeMap::new();
    for device in devices {
        let p = partition_of(&device, log.partitions());
        let hash = log
            .read_hashes(&[log.keys().device_minute(p, &device, minute)])
            .await
            .unwrap()
            .remove(0);
        let get = |f: &str| {
            hash.iter()
                .find(|(k, _)| k == f)
                .map_or(0, |(_, v)| v.parse::<u64>().unwrap())
        };
        out.insert(
            device,
            Expected {
                events: get("n"),
                gpu: get("gpu.n"),
                tokens: get("tok.n"),
                prompt: get("tok.prompt"),
                completion: get("tok.completion"),
                metrics: get("metric.n"),
            },
        );
    }
    out
}

/// Asserts that the aggregates of `minute` are, device by device, what
/// `events` make.
pub async fn assert_folded(log: &AnyLog, events: &[Event], minute: i64) {
    let want = expected(events);
    assert_eq!(actual(log, want.keys().cloned(), minute).await, want);
}

/// A fresh in-memory log with the default settings.
pub fn memory_log() -> AnyLog {
    AnyLog::Memory(MemoryLog::new(&StoreArgs::default()))
}

/// Pipeline counters summed over partitions.
pub async fn totals(log: &AnyLog) -> PartitionFigures {
    let mut t = PartitionFigures::default();
    for p in 0..log.partitions() {
        let f = log.figures(p).await.unwrap();
        t.ingested += f.ingested;
        t.processed += f.processed;
        t.duplicates += f.duplicates;
        t.dead_lettered += f.dead_lettered;
    }
    t
}

/// Polls until `ingested` events are appended and all of them processed
/// (or dead-lettered), for at most `limit`.
pub async fn wait_drained(log: &AnyLog, ingested: u64, limit: Duration) -> PartitionFigures {
    let deadline = Instant::now() + limit;
    loop {
        let t = totals(log).await;
        if t.ingested >= ingested && t.processed + t.dead_lettered >= t.ingested {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "not drained within {limit:?}: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Event `id` of `device`: metric `m` = 1.0, observed now.
pub fn metric_now(id: &str, device: &str) -> Event {
    Event {
        event_id: id.to_owned(),
        device_id: device.to_owned(),
        observed_at: Some(std::time::SystemTime::now().into()),
        payload: Some(Payload::Metric(Metric {
            name: "m".to_owned(),
            value: 1.0,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// One `Publish` call of `events` (no producer id): the answer or the
/// status.
pub async fn publish(
    client: &mut IngestServiceClient<Channel>,
    events: Vec<Event>,
) -> Result<PublishResponse, tonic::Status> {
    client
        .publish(PublishRequest {
            events,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Publishes `events` in requests of `batch` events, each accepted whole.
pub async fn publish_all(
    client: &mut IngestServiceClient<Channel>,
    events: &[Event],
    batch: usize,
) {
    for chunk in events.chunks(batch) {
        let response = publish(client, chunk.to_vec()).await.unwrap();
        assert_eq!(response.accepted_count as usize, chunk.len());
    }
}
