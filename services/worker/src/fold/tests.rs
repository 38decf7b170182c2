use prost::Message as _;
use testbed_proto::v1::{Event, GpuSample, Metric, TokenUsage, event::Payload};

use super::*;

/// An entry (its events are passed to the fold decoded).
fn entry(id: &str, partition: u32) -> Entry {
    Entry {
        id: id.into(),
        partition,
        meta: vec![],
        events: vec![],
        deliveries: 1,
    }
}

/// `event` as an entry holds it.
fn view(event: &Event) -> Bytes {
    Bytes::from(event.encode_to_vec())
}

fn event(device: &str, secs: i64, payload: Payload) -> Bytes {
    view(&Event {
        event_id: format!("{device}-{secs}"),
        device_id: device.into(),
        observed_at: Some(prost_types::Timestamp {
            seconds: secs,
            nanos: 0,
        }),
        labels: [("arch".to_owned(), "arm64".to_owned())].into(),
        run_id: "run-1".into(),
        payload: Some(payload),
    })
}

fn gpu(util: f64, power: f64) -> Payload {
    Payload::Gpu(GpuSample {
        utilization: util,
        power_watts: power,
        temperature_celsius: 50.0,
        ..Default::default()
    })
}

fn find<'a>(ops: &'a Ops, key: &str) -> Vec<&'a Op> {
    let Some(i) = ops.keys.iter().position(|k| k == key) else {
        return Vec::new();
    };
    ops.ops
        .iter()
        .filter(|op| match op {
            Op::HashIncr(k, ..)
            | Op::HashIncrFloat(k, ..)
            | Op::HashMin(k, ..)
            | Op::HashMax(k, ..)
            | Op::HashSet(k, ..)
            | Op::HashSummary(k, ..)
            | Op::ZIncr(k, ..)
            | Op::ZMax(k, ..)
            | Op::Expire(k, ..) => usize::from(*k) == i,
        })
        .collect()
}

/// Last-seen times are kept to the second, rounded down, in the state
/// record and in the devices index alike.
#[test]
fn last_seen_is_rounded_down_to_the_second() {
    let keys = Keys::new("t");
    let entry = entry("120000-0", 2);
    let late = view(&Event {
        event_id: "late".into(),
        device_id: "d1".into(),
        observed_at: Some(prost_types::Timestamp {
            seconds: 61,
            nanos: 999_000_000,
        }),
        payload: Some(gpu(0.5, 1.0)),
        ..Default::default()
    });
    let events = [event("d1", 60, gpu(0.25, 100.0)), late];
    let ops = fold(&entry, &events, &keys, Duration::from_secs(3600));
    let device = find(&ops, &keys.device(2, "d1"));
    assert!(
        device
            .iter()
            .any(|op| matches!(op, Op::HashMax(_, f, ms) if f == "seen" && *ms == 61_000.0)),
        "{device:?}"
    );
    let index = find(&ops, &keys.devices(2));
    assert!(
        index
            .iter()
            .any(|op| matches!(op, Op::ZMax(_, m, ms) if m == "d1" && *ms == 61_000.0)),
        "{index:?}"
    );
}

/// Two GPU samples of one device in one minute fold into one delta set.
#[test]
fn folds_same_minute_into_one_delta() {
    let keys = Keys::new("t");
    let entry = entry("120000-0", 2);
    let events = [
        event("d1", 60, gpu(0.25, 100.0)),
        event("d1", 61, gpu(0.75, 300.0)),
    ];
    let ops = fold(&entry, &events, &keys, Duration::from_secs(3600));
    let dm = find(&ops, &keys.device_minute(2, "d1", 1));
    assert!(dm.contains(&&Op::HashIncr(0, "n".into(), 2)));
    assert!(dm.contains(&&Op::HashSummary(
        0,
        "gpu.util".into(),
        [2.0, 1.0, 0.25, 0.75]
    )));
    assert!(dm.contains(&&Op::HashSummary(
        0,
        "gpu.power".into(),
        [2.0, 400.0, 100.0, 300.0]
    )));
    assert!(dm.contains(&&Op::Expire(0, 3600)));
    let run = find(&ops, &keys.run(2, "run-1"));
    // gpu, processed, expire, first event time, last processed time
    assert_eq!(run.len(), 5, "{run:?}");
    assert!(
        run.iter().any(
            |op| matches!(op, Op::HashMin(_, f, ms) if f == "first_event_ms" && *ms == 60_000.0)
        )
    );
    let device = find(&ops, &keys.device(2, "d1"));
    assert!(
        device
            .iter()
            .any(|op| matches!(op, Op::HashMax(_, f, ms) if f == "seen" && *ms == 61_000.0))
    );
    assert!(device.iter().any(
        |op| matches!(op, Op::HashSet(_, f, v) if f == "labels" && v == "{\"arch\":\"arm64\"}")
    ));
    // The device is in the id index and the postings of its one label.
    let arm = keys.label_devices(2, "arch", "arm64");
    for set in [keys.device_ids(2), arm] {
        let writes = find(&ops, &set);
        assert!(
            matches!(writes.as_slice(), [Op::ZMax(_, m, score)] if m == "d1" && *score == 0.0),
            "{set}: {writes:?}"
        );
    }
    assert_eq!(
        ops.e2e.iter().map(|(_, _, n)| *n).collect::<Vec<_>>(),
        vec![2, 2]
    );
}

/// Tokens feed per-model and per-tenant groups; metrics their own names.
#[test]
fn folds_tokens_and_metrics() {
    let keys = Keys::new("t");
    let entry = entry("60000-0", 0);
    let tokens = Payload::Tokens(TokenUsage {
        model: "llama".into(),
        tenant: "a".into(),
        prompt_tokens: 10,
        completion_tokens: 5,
        latency: Some(prost_types::Duration {
            seconds: 0,
            nanos: 250_000_000,
        }),
    });
    let metric = Payload::Metric(Metric {
        name: "fan".into(),
        value: 3.0,
        unit: "1".into(),
    });
    let ops = fold(
        &entry,
        &[event("d", 0, tokens), event("d", 1, metric)],
        &keys,
        Duration::from_secs(60),
    );
    let tok = find(&ops, &keys.tokens_minute(0, 0));
    assert!(
        tok.iter()
            .any(|op| matches!(op, Op::HashIncr(_, f, 10) if f == "model:llama:prompt"))
    );
    assert!(
        tok.iter()
            .any(|op| matches!(op, Op::HashIncr(_, f, 5) if f == "tenant:a:completion"))
    );
    let bucket = latency_bucket(250);
    assert!(tok.iter().any(
        |op| matches!(op, Op::HashIncr(_, f, 1) if *f == format!("model:llama:lat:{bucket}"))
    ));
    let dm = find(&ops, &keys.device_minute(0, "d", 0));
    assert!(dm.iter().any(
        |op| matches!(op, Op::HashSummary(_, f, v) if f == "metric:fan" && *v == [1.0, 3.0, 3.0, 3.0])
    ));
    assert!(
        dm.iter()
            .any(|op| matches!(op, Op::HashSet(_, f, v) if f == "unit:fan" && v == "1"))
    );
    // The minute's rankings: 2 events, 15 tokens (prompt + completion);
    // no GPU ranking without GPU samples. Every other sorted set is an
    // index of devices.
    let ranked = |metric: &str| {
        find(&ops, &keys.top(0, metric, 0))
            .into_iter()
            .filter_map(|op| match op {
                Op::ZIncr(_, m, by) => Some((m.clone(), *by)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(ranked("n"), vec![("d".to_owned(), 2.0)]);
    assert_eq!(ranked("tok"), vec![("d".to_owned(), 15.0)]);
    assert!(find(&ops, &keys.top(0, "gpu.util", 0)).is_empty());
    let zsets: Vec<&str> = ops
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::ZIncr(k, ..) | Op::ZMax(k, ..) => Some(ops.keys[usize::from(*k)].as_str()),
            _ => None,
        })
        .collect();
    assert!(
        !zsets.is_empty()
            && zsets.iter().all(|k| *k == keys.devices(0)
                || *k == keys.device_ids(0)
                || k.starts_with("{t:p0}:label/")
                || k.starts_with("{t:p0}:top/")),
        "{zsets:?}"
    );
    // The rankings expire with the device-minute records.
    assert!(ops.ops.iter().any(
        |op| matches!(op, Op::Expire(k, 60) if ops.keys[usize::from(*k)] == keys.top(0, "n", 0))
    ));
}

/// A device's labels are those of its last event that had any; a key
/// sent twice in one event keeps its last value, as a map would.
#[test]
fn labels_come_from_the_last_labelled_event() {
    let keys = Keys::new("t");
    let entry = entry("60000-0", 0);
    let mut unlabelled = Event::decode(event("d", 2, gpu(0.5, 1.0))).unwrap();
    unlabelled.labels.clear();
    // zone twice: b wins.
    let mut twice = Event {
        labels: Default::default(),
        ..unlabelled.clone()
    }
    .encode_to_vec();
    for (k, v) in [("zone", "a"), ("zone", "b")] {
        let entry = [
            &[0x0a, k.len() as u8][..],
            k.as_bytes(),
            &[0x12, v.len() as u8],
            v.as_bytes(),
        ]
        .concat();
        twice.extend([0x22, entry.len() as u8]);
        twice.extend(entry);
    }
    let events = [
        event("d", 0, gpu(0.5, 1.0)),
        Bytes::from(twice),
        view(&unlabelled),
    ];
    let ops = fold(&entry, &events, &keys, Duration::from_secs(60));
    let device = find(&ops, &keys.device(0, "d"));
    assert!(
        device.iter().any(
            |op| matches!(op, Op::HashSet(_, f, v) if f == "labels" && v == "{\"zone\":\"b\"}")
        ),
        "{device:?}"
    );
}

/// Text the fold reads that is not UTF-8 makes the event fail the
/// check (the entry is dead-lettered), naming the field; so do bytes
/// that are no event.
#[test]
fn text_that_is_not_utf8_fails_the_check() {
    let good = event("d", 0, gpu(0.5, 1.0)).to_vec();
    assert_eq!(check(&good), Ok(()));
    for (extra, field) in [
        (vec![0x12, 1, 0xff], "device_id"),
        (vec![0x2a, 1, 0xff], "run_id"),
        (vec![0x22, 5, 0x0a, 1, 0xff, 0x12, 0], "labels"),
        (vec![0x62, 3, 0x0a, 1, 0xff], "metric"),
    ] {
        let mut bytes = good.clone();
        bytes.extend(extra);
        let err = check(&bytes).unwrap_err();
        assert!(err.starts_with(field), "{err}");
    }
    assert!(check(&[0x0a, 9]).is_err());
}

/// An entry is folded only if every one of its events passes the
/// check: one that fails adds nothing, and names its event; the good
/// entries of the same fold come out as a fold of them alone.
#[test]
fn an_entry_with_a_bad_event_adds_nothing() {
    let keys = Keys::new("t");
    let retention = Duration::from_secs(3600);
    let good = [
        event("d1", 60, gpu(0.25, 100.0)),
        event("d2", 60, gpu(0.5, 50.0)),
    ];
    let mut bad_text = event("d3", 60, gpu(1.0, 1.0)).to_vec();
    bad_text.extend([0x12, 1, 0xff]);
    let bad = [event("d3", 61, gpu(0.5, 1.0)), Bytes::from(bad_text)];
    let (first, second) = (entry("120000-0", 2), entry("120001-0", 2));

    let mut folder = Folder::new(2, &keys, retention);
    assert_eq!(folder.add_checked(0, &first, &good), Ok(()));
    let err = folder.add_checked(1, &second, &bad).unwrap_err();
    assert_eq!(err, "undecodable event 1: device_id is not UTF-8 text");
    assert_eq!(entry_check(&bad), Err(err));
    assert_eq!(entry_check(&good), Ok(()));
    assert_eq!(folder.events(), 2);
    let checked = folder.finish();
    assert!(find(&checked, &keys.device(2, "d3")).is_empty());
    // The same writes as a fold of the good entry alone (in the order
    // of its maps, which is not fixed).
    let alone = fold(&first, &good, &keys, retention);
    let sorted = |ops: &Ops| {
        let mut keys = ops.keys.clone();
        keys.sort();
        (keys, ops.ops.len(), ops.e2e.len())
    };
    assert_eq!(sorted(&checked), sorted(&alone));
}

/// Devices the cache knows indexed with the same labels get no index
/// writes (their state and last-seen still do); other labels, or no cache,
/// write them, and finish_with names the devices it indexed.
#[test]
fn indexed_devices_are_left_out_of_index_writes() {
    let keys = Keys::new("t");
    let entry = entry("120000-0", 2);
    let events = [event("d1", 60, gpu(0.25, 100.0))];
    let retention = Duration::from_secs(3600);
    let index_writes = |ops: &Ops| {
        ops.ops
            .iter()
            .filter(|op| match op {
                Op::ZMax(k, ..) => {
                    let key = &ops.keys[usize::from(*k)];
                    *key != keys.devices(2) && !key.contains(":top/")
                }
                _ => false,
            })
            .count()
    };
    let cache = Indexed::new(10, retention);
    let fold_with = |cache: &Indexed| {
        let mut folder = Folder::new(2, &keys, retention);
        folder.add(0, &entry, &events);
        folder.finish_with(Some(cache))
    };
    let (ops, indexed) = fold_with(&cache);
    // The id index and one posting.
    assert_eq!(index_writes(&ops), 2, "{ops:?}");
    assert_eq!(indexed.len(), 1);
    assert_eq!(indexed[0].0, "d1");
    cache.record(indexed.clone(), std::time::Instant::now());
    let (ops, again) = fold_with(&cache);
    assert_eq!(index_writes(&ops), 0, "{ops:?}");
    assert!(again.is_empty());
    assert!(
        !find(&ops, &keys.devices(2)).is_empty(),
        "last seen still written"
    );
    // Other labels: written again.
    let other = Indexed::new(10, retention);
    other.record(
        vec![("d1".into(), indexed[0].1 ^ 1)],
        std::time::Instant::now(),
    );
    assert_eq!(index_writes(&fold_with(&other).0), 2);
}
