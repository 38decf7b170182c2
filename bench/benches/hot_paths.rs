//! Micro-benchmarks of the per-event hot paths, on events from the
//! simulator's own fleet (same mix, sizes and labels as a real run):
//! validation at ingest (through a view of the encoded event), protobuf
//! encode/decode, the simulator's generator, partitioning, and the
//! worker's fold of one entry into aggregate writes.
//!
//! The full suite takes about a minute with light settings:
//! `cargo bench -p testbed-bench --bench hot_paths -- --warm-up-time 1 --measurement-time 2`
//! (the group settings below are already that light; the flags override them).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use prost::bytes::Bytes;
use testbed_ingest::IngestConfig;
use testbed_proto::raw::{EventRef, EventView};
use testbed_proto::v1::Event;
use testbed_sim::load::fleet::{Fleet, Mix};
use testbed_stream::Entry;
use testbed_stream::keys::Keys;

/// Events per batch: the simulator's default largest batch.
const BATCH: usize = 100;

/// The simulator's default fleet: 1000 devices, its arch and kind mix.
fn fleet() -> Fleet {
    let arch = [
        ("amd64".to_owned(), 0.5),
        ("arm64".to_owned(), 0.3),
        ("armv7".to_owned(), 0.2),
    ];
    Fleet::new(1000, "sim", &arch, Mix::default(), 7, "run-1763790000-1a2b")
}

fn events(n: usize) -> Vec<Event> {
    let mut fleet = fleet();
    let now = SystemTime::now();
    (0..n).map(|_| fleet.next_event(now).0).collect()
}

fn validate(c: &mut Criterion) {
    let encoded: Vec<Bytes> = events(BATCH)
        .iter()
        .map(|e| Bytes::from(e.encode_to_vec()))
        .collect();
    let views: Vec<EventRef<'_>> = encoded
        .iter()
        .map(|b| EventRef::decode(b).unwrap())
        .collect();
    let config = IngestConfig::default();
    let now = SystemTime::now();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("validate/batch100", |b| {
        b.iter(|| {
            for view in &views {
                black_box(testbed_ingest::validate::validate(
                    black_box(view),
                    &config,
                    now,
                ))
                .unwrap();
            }
        });
    });
    // What ingest does per event before validating: read it in place
    // (compare `proto/decode/batch100`, and the prost view it replaced).
    g.bench_function("view/batch100", |b| {
        b.iter(|| {
            for bytes in &encoded {
                let view = EventRef::decode(black_box(bytes)).unwrap();
                black_box(view.holds_everything());
            }
        });
    });
    g.bench_function("prost-view/batch100", |b| {
        b.iter(|| {
            for bytes in &encoded {
                let view = EventView::decode(black_box(bytes.clone())).unwrap();
                black_box(view.encoded_len() == bytes.len());
            }
        });
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let batch = events(BATCH);
    let encoded: Vec<Vec<u8>> = batch.iter().map(Message::encode_to_vec).collect();
    let mut g = c.benchmark_group("proto");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("encode/batch100", |b| {
        b.iter(|| {
            for e in &batch {
                black_box(black_box(e).encode_to_vec());
            }
        });
    });
    g.bench_function("decode/batch100", |b| {
        b.iter(|| {
            for bytes in &encoded {
                black_box(Event::decode(black_box(bytes.as_slice())).unwrap());
            }
        });
    });
    g.finish();
}

/// The simulator's generator: one batch of `GENERATED` events encoded
/// into one buffer, as its scheduler builds each batch.
fn generate(c: &mut Criterion) {
    const GENERATED: usize = 1000;
    let mut fleet = fleet();
    let now = SystemTime::now();
    let mut g = c.benchmark_group("sim");
    g.throughput(Throughput::Elements(GENERATED as u64));
    g.bench_function("generate/batch1000", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(GENERATED * 192);
            for _ in 0..GENERATED {
                black_box(fleet.next_event_into(now, &mut buf));
            }
            black_box(Bytes::from(buf));
        });
    });
    g.finish();
}

fn partition(c: &mut Criterion) {
    let ids: Vec<String> = (0..1000).map(|i| format!("sim-{i:05}")).collect();
    let mut g = c.benchmark_group("stream");
    g.throughput(Throughput::Elements(ids.len() as u64));
    g.bench_function("partition_of/1000 devices", |b| {
        b.iter(|| {
            for id in &ids {
                black_box(testbed_stream::partition_of(black_box(id), 4));
            }
        });
    });
    g.finish();
}

fn fold(c: &mut Criterion) {
    let entry = Entry {
        id: "1763790000000-0".to_owned(),
        partition: 0,
        meta: Vec::new(),
        events: events(BATCH)
            .iter()
            .map(|e| Bytes::from(e.encode_to_vec()))
            .collect(),
        deliveries: 1,
    };
    let keys = Keys::new("bench");
    let retention = Duration::from_secs(3600);
    let mut g = c.benchmark_group("worker");
    g.throughput(Throughput::Elements(BATCH as u64));
    // The fold reads each event in place as it goes.
    g.bench_function("fold/entry100", |b| {
        b.iter(|| {
            black_box(testbed_worker::fold::fold(
                &entry,
                black_box(&entry.events),
                &keys,
                retention,
            ))
        });
    });
    // What the worker really does per entry: read and check every event
    // once, then fold them (nothing is folded if one fails).
    g.bench_function("check+fold/entry100", |b| {
        b.iter_batched(
            || entry.clone(),
            |entry| {
                let mut folder = testbed_worker::fold::Folder::new(0, &keys, retention);
                folder.add_checked(0, &entry, &entry.events).unwrap();
                black_box(folder.finish())
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

fn light() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args()
}

criterion_group! {
    name = hot_paths;
    config = light();
    targets = validate, codec, generate, partition, fold
}
criterion_main!(hot_paths);
