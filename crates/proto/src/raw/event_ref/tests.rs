#![allow(clippy::unwrap_used)]

use prost::Message as _;
use prost::bytes::Bytes;

use super::*;
use crate::raw::{EventView, PayloadView, samples};

/// Panics unless `bytes` decode to the same event as an [`EventRef`]
/// and through prost's generated code (as an [`EventView`]), or fail
/// both ways. Returns the view when they decode.
fn agree(bytes: &[u8]) -> Option<EventRef<'_>> {
    let view = EventView::decode(Bytes::copy_from_slice(bytes));
    let ours = EventRef::decode(bytes);
    let (ours, view) = match (ours, view) {
        (Err(_), Err(_)) => return None,
        (Ok(ours), Ok(view)) => (ours, view),
        (ours, view) => panic!("disagree on {bytes:02x?}: {ours:?} vs {view:?}"),
    };
    let labels: Vec<(&[u8], &[u8])> = view
        .labels
        .iter()
        .map(|l| (&l.key[..], &l.value[..]))
        .collect();
    let same_payload = match (ours.payload, &view.payload) {
        (None, None) => true,
        (Some(PayloadRef::Gpu(a)), Some(PayloadView::Gpu(b))) => {
            // Compare doubles by bits: NaN is a value here.
            (a.gpu_index, a.memory_used_bytes, a.memory_total_bytes)
                == (b.gpu_index, b.memory_used_bytes, b.memory_total_bytes)
                && [a.utilization, a.temperature_celsius, a.power_watts].map(f64::to_bits)
                    == [b.utilization, b.temperature_celsius, b.power_watts].map(f64::to_bits)
        }
        (Some(PayloadRef::Tokens(a)), Some(PayloadView::Tokens(b))) => {
            (a.model, a.tenant) == (&b.model[..], &b.tenant[..])
                && (a.prompt_tokens, a.completion_tokens, a.latency)
                    == (b.prompt_tokens, b.completion_tokens, b.latency)
        }
        (Some(PayloadRef::Metric(a)), Some(PayloadView::Metric(b))) => {
            (a.name, a.unit, a.value.to_bits()) == (&b.name[..], &b.unit[..], b.value.to_bits())
        }
        _ => false,
    };
    assert!(
        ours.event_id == &view.event_id[..]
            && ours.device_id == &view.device_id[..]
            && ours.run_id == &view.run_id[..]
            && ours.observed_at == view.observed_at
            && ours.labels.len() == labels.len()
            && ours.labels.iter().eq(labels.iter().copied())
            && same_payload,
        "disagree on {bytes:02x?}: {ours:?} vs {view:?}"
    );
    Some(ours)
}

/// What prost encodes holds nothing more than the view, and both
/// readers agree on it.
#[test]
fn encoded_events_are_read_whole() {
    for event in samples::events() {
        let bytes = event.encode_to_vec();
        let ours = agree(&bytes).unwrap();
        assert!(ours.holds_everything(), "{event:?}");
        assert_eq!(ours.labels.len(), event.labels.len());
        // Zero-copy: the ids are slices of the encoded event.
        if !event.event_id.is_empty() {
            assert!(bytes.as_ptr_range().contains(&ours.event_id.as_ptr()));
        }
    }
}

/// Every prefix of an event, and every single-byte corruption of it,
/// reads the same as with prost's generated decoder, or fails with it.
#[test]
fn corrupted_events_read_as_prost_reads_them() {
    let mut decoded = 0;
    let mut failed = 0;
    for event in samples::events() {
        let bytes = event.encode_to_vec();
        for end in 0..=bytes.len() {
            match agree(&bytes[..end]) {
                Some(_) => decoded += 1,
                None => failed += 1,
            }
        }
        for at in 0..bytes.len() {
            let original = bytes[at];
            for value in [
                0x00,
                0x01,
                0x02,
                0x07,
                0x7f,
                0x80,
                0xff,
                original ^ 0x01,
                original ^ 0x07,
                original ^ 0x80,
            ] {
                let mut corrupt = bytes.clone();
                corrupt[at] = value;
                match agree(&corrupt) {
                    Some(_) => decoded += 1,
                    None => failed += 1,
                }
            }
        }
    }
    // Both outcomes were exercised, many times.
    assert!(
        decoded > 200 && failed > 200,
        "{decoded} decoded, {failed} failed"
    );
}

fn field(tag: u32, wire: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(u64::from(tag << 3 | u32::from(wire)), &mut out);
    if wire == LEN {
        prost::encoding::encode_varint(payload.len() as u64, &mut out);
    }
    out.extend_from_slice(payload);
    out
}

/// Unknown fields (a group among them) and fields sent twice are read as
/// protobuf says, and make the bytes more than the view holds.
#[test]
fn extras_are_noticed() {
    let canonical = samples::events()[2].encode_to_vec(); // a metric
    let with = |extra: Vec<u8>| {
        let mut bytes = canonical.clone();
        bytes.extend_from_slice(&extra);
        bytes
    };
    let group = [
        field(99, START_GROUP, &[]),
        field(1, VARINT, &[5]),
        field(99, END_GROUP, &[]),
    ]
    .concat();
    let cases = [
        ("unknown varint", with(field(99, VARINT, &[7]))),
        ("unknown fixed32", with(field(98, FIXED32, &[1, 2, 3, 4]))),
        ("unknown group", with(group)),
        ("event_id twice", with(field(1, LEN, b"ev-2"))),
        (
            "observed_at merged",
            with(field(3, LEN, &field(2, VARINT, &[9]))),
        ),
        ("metric merged", with(field(12, LEN, &field(3, LEN, b"Hz")))),
        (
            "payload replaced",
            with(field(10, LEN, &field(1, VARINT, &[4]))),
        ),
        (
            "unknown field in the payload",
            with(field(12, LEN, &field(9, VARINT, &[1]))),
        ),
        (
            "unknown field in a label",
            with(field(
                4,
                LEN,
                &[field(1, LEN, b"k"), field(3, VARINT, &[1])].concat(),
            )),
        ),
        (
            "label key twice",
            with(field(
                4,
                LEN,
                &[field(1, LEN, b"k"), field(1, LEN, b"j")].concat(),
            )),
        ),
    ];
    for (what, bytes) in cases {
        let ours = agree(&bytes).unwrap_or_else(|| panic!("{what}: did not decode"));
        assert!(!ours.holds_everything(), "{what}");
    }
    // The last of a field sent twice wins; a merged message keeps what
    // the second part does not set; a new payload member replaces.
    let twice = with(field(1, LEN, b"ev-2"));
    assert_eq!(EventRef::decode(&twice).unwrap().event_id, b"ev-2");
    let merged = with(field(12, LEN, &field(3, LEN, b"Hz")));
    match EventRef::decode(&merged).unwrap().payload {
        Some(PayloadRef::Metric(m)) => assert_eq!((m.name, m.unit), (&b"fan"[..], &b"Hz"[..])),
        other => panic!("{other:?}"),
    }
    let replaced = with(field(10, LEN, &field(1, VARINT, &[4])));
    match EventRef::decode(&replaced).unwrap().payload {
        Some(PayloadRef::Gpu(g)) => assert_eq!(g.gpu_index, 4),
        other => panic!("{other:?}"),
    }
    // A label entry sent twice is not a field sent twice.
    let two_labels = with(field(
        4,
        LEN,
        &[field(1, LEN, b"zone"), field(2, LEN, b"b")].concat(),
    ));
    let ours = agree(&two_labels).unwrap();
    assert!(ours.holds_everything());
    assert_eq!(ours.labels.len(), 4);
    // A label whose key is an over-long varint (two bytes for 0x22).
    let entry = [field(1, LEN, b"k"), field(2, LEN, b"v")].concat();
    let long_key = with([&[0xa2, 0x00, entry.len() as u8][..], &entry].concat());
    let ours = agree(&long_key).unwrap();
    assert_eq!(ours.labels.iter().last(), Some((&b"k"[..], &b"v"[..])));
}

/// Wire types a known field cannot have, stray end-group keys and field
/// number 0 fail as they do with prost.
#[test]
fn malformed_keys_fail() {
    let canonical = samples::events()[0].encode_to_vec();
    let with = |extra: Vec<u8>| [canonical.clone(), extra].concat();
    for bytes in [
        with(field(1, VARINT, &[1])),
        with(field(3, FIXED64, &[0; 8])),
        with(field(99, END_GROUP, &[])),
        with(field(99, START_GROUP, &[])),
        with(vec![0x00, 0x01]),
        with(vec![0x0e]), // wire type 6
        with(vec![
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02,
        ]),
    ] {
        assert!(EventRef::decode(&bytes).is_err(), "{bytes:02x?}");
        assert!(agree(&bytes).is_none());
    }
    // Groups nested past the limit.
    let deep: Vec<u8> = (0..MAX_GROUP_DEPTH + 1)
        .flat_map(|_| field(99, START_GROUP, &[]))
        .chain((0..MAX_GROUP_DEPTH + 1).flat_map(|_| field(99, END_GROUP, &[])))
        .collect();
    assert!(agree(&with(deep)).is_none());
}
