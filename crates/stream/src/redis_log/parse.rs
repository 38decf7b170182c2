//! Decoding Redis stream replies into the log's types.

use std::collections::BTreeMap;

use prost::bytes::Bytes;
use redis::Value;

use crate::StoreError;
use crate::model::{ConsumerInfo, Entry, PendingSummary};

fn bad(what: &str, value: &Value) -> StoreError {
    StoreError::Protocol(format!("unexpected {what} reply: {value:?}"))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(other)?.parse().ok(),
    }
}

fn items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

fn items_mut(value: &mut Value) -> Option<&mut [Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// Splits an entry id into its numeric parts for ordering.
pub(crate) fn split_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// One `[id, [field, value, ...]]` stream entry. Its data is taken out of
/// `value`, not copied: the events are slices of the reply's own buffer.
fn entry(value: &mut Value, partition: u32) -> Result<Entry, StoreError> {
    let Some(parts) = items_mut(value) else {
        return Err(bad("stream entry", value));
    };
    // Redis never sends an empty id; one would be acked and claimed as
    // nothing.
    let Some(id) = parts.first().and_then(text).filter(|id| !id.is_empty()) else {
        return Err(bad("entry id", value));
    };
    let mut entry = Entry {
        id,
        partition,
        meta: Vec::new(),
        events: Vec::new(),
        deliveries: 1,
    };
    // A deleted-but-pending entry has a nil body: it is returned with no
    // events, and the worker dead-letters it.
    let mut blob: Option<Vec<u8>> = None;
    let mut skip: Vec<usize> = Vec::new();
    if let Some(fields) = parts.get_mut(1).and_then(items_mut) {
        for pair in fields.chunks_mut(2) {
            let [Value::BulkString(name), Value::BulkString(data)] = pair else {
                continue;
            };
            match name.as_slice() {
                b"m" => entry.meta = std::mem::take(data),
                // One field per event: entries written before the blob.
                b"e" => entry.events.push(Bytes::from(std::mem::take(data))),
                b"b" => blob = Some(std::mem::take(data)),
                b"d" => {
                    skip = String::from_utf8_lossy(data)
                        .split(',')
                        .filter_map(|p| p.parse().ok())
                        .collect()
                }
                _ => {}
            }
        }
    }
    if let Some(blob) = blob {
        // A blob that does not split cleanly leaves the entry with no
        // events, which the worker dead-letters rather than guess.
        // The events are slices of the blob the reply was parsed into.
        let shared = Bytes::from(blob);
        let events = split_blob(&shared).unwrap_or_default();
        entry.events.extend(
            events
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !skip.contains(i))
                .map(|(_, e)| shared.slice_ref(e)),
        );
    }
    Ok(entry)
}

/// The events of a blob: each length-delimited (protobuf `repeated bytes`).
pub(crate) fn split_blob(mut blob: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !blob.is_empty() {
        let len = usize::try_from(prost::encoding::decode_varint(&mut blob).ok()?).ok()?;
        let event = blob.get(..len)?;
        blob = blob.get(len..)?;
        out.push(event);
    }
    Some(out)
}

/// `XREADGROUP ... STREAMS key >`: nil on timeout, else `[[key, [entries]]]`
/// (RESP2) or a map of key to entries (RESP3).
pub(crate) fn read_reply(reply: &mut Value, partition: u32) -> Result<Vec<Entry>, StoreError> {
    let streams: Vec<&mut Value> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .iter_mut()
            .filter_map(|s| items_mut(s).and_then(|kv| kv.get_mut(1)))
            .collect(),
        Value::Map(pairs) => pairs.iter_mut().map(|(_, v)| v).collect(),
        other => return Err(bad("XREADGROUP", other)),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Some(entries) = items_mut(stream) else {
            return Err(bad("XREADGROUP entries", stream));
        };
        for e in entries {
            out.push(entry(e, partition)?);
        }
    }
    Ok(out)
}

/// `XAUTOCLAIM`: `[next cursor, [entries], [deleted ids]]`.
pub(crate) fn autoclaim_reply(reply: &mut Value, partition: u32) -> Result<Vec<Entry>, StoreError> {
    let Some(entries) = items_mut(reply)
        .and_then(|parts| parts.get_mut(1))
        .and_then(items_mut)
    else {
        return Err(bad("XAUTOCLAIM", reply));
    };
    entries.iter_mut().map(|e| entry(e, partition)).collect()
}

/// `XCLAIM`: `[entries]`; an entry deleted from the stream while pending
/// is left out (Redis 7 drops it from the pending list; older versions
/// answer nil in its place).
pub(crate) fn claim_reply(reply: &mut Value, partition: u32) -> Result<Vec<Entry>, StoreError> {
    let Some(entries) = items_mut(reply) else {
        return Err(bad("XCLAIM", reply));
    };
    entries
        .iter_mut()
        .filter(|e| !matches!(e, Value::Nil))
        .map(|e| entry(e, partition))
        .collect()
}

/// `XINFO CONSUMERS`: per consumer, `name`, `pending` and `idle` (ms)
/// among other fields, as a flat list of pairs (RESP2) or a map (RESP3).
pub(crate) fn consumers(reply: &Value) -> Result<Vec<ConsumerInfo>, StoreError> {
    let rows = items(reply).ok_or_else(|| bad("XINFO CONSUMERS", reply))?;
    rows.iter()
        .map(|row| {
            let pairs: Vec<(String, &Value)> = match row {
                Value::Map(pairs) => pairs
                    .iter()
                    .filter_map(|(k, v)| Some((text(k)?, v)))
                    .collect(),
                other => items(other)
                    .ok_or_else(|| bad("XINFO CONSUMERS row", row))?
                    .chunks(2)
                    .filter_map(|kv| Some((text(kv.first()?)?, kv.get(1)?)))
                    .collect(),
            };
            let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            let name = get("name")
                .and_then(text)
                .ok_or_else(|| bad("XINFO CONSUMERS name", row))?;
            Ok(ConsumerInfo {
                name,
                pending: get("pending").and_then(int).unwrap_or(0),
                idle: std::time::Duration::from_millis(get("idle").and_then(int).unwrap_or(0)),
            })
        })
        .collect()
}

/// Extended `XPENDING`: `[[id, consumer, idle ms, deliveries], ...]` →
/// deliveries by id.
pub(crate) fn pending_deliveries(reply: &Value) -> Result<BTreeMap<String, u64>, StoreError> {
    let rows = items(reply).ok_or_else(|| bad("XPENDING", reply))?;
    rows.iter()
        .map(|row| {
            let cols = items(row).ok_or_else(|| bad("XPENDING row", row))?;
            let id = cols
                .first()
                .and_then(text)
                .ok_or_else(|| bad("XPENDING id", row))?;
            let deliveries = cols
                .get(3)
                .and_then(int)
                .ok_or_else(|| bad("XPENDING count", row))?;
            Ok((id, deliveries))
        })
        .collect()
}

/// Summary `XPENDING`: `[count, min id, max id, [[consumer, count], ...]]`.
pub(crate) fn pending_summary(reply: &Value) -> Result<PendingSummary, StoreError> {
    let parts = items(reply).ok_or_else(|| bad("XPENDING summary", reply))?;
    let entries = parts
        .first()
        .and_then(int)
        .ok_or_else(|| bad("XPENDING summary", reply))?;
    let oldest_ms = parts.get(1).and_then(text).map(|id| split_id(&id).0);
    Ok(PendingSummary {
        entries,
        oldest_ms: if entries == 0 { None } else { oldest_ms },
    })
}

/// `XINFO GROUPS`: the `last-delivered-id` of `group`, if it exists.
pub(crate) fn group_last_delivered(
    reply: &Value,
    group: &str,
) -> Result<Option<String>, StoreError> {
    let groups = items(reply).ok_or_else(|| bad("XINFO GROUPS", reply))?;
    for g in groups {
        let fields: Vec<(String, &Value)> = match g {
            Value::Array(flat) => flat
                .chunks(2)
                .filter_map(|kv| Some((text(kv.first()?)?, kv.get(1)?)))
                .collect(),
            Value::Map(pairs) => pairs
                .iter()
                .filter_map(|(k, v)| Some((text(k)?, v)))
                .collect(),
            _ => continue,
        };
        let name = fields
            .iter()
            .find(|(k, _)| k == "name")
            .and_then(|(_, v)| text(v));
        if name.as_deref() == Some(group) {
            return Ok(fields
                .iter()
                .find(|(k, _)| k == "last-delivered-id")
                .and_then(|(_, v)| text(v)));
        }
    }
    Ok(None)
}

/// The values of an `HMGET` or a `ZMSCORE` (`None`: absent), taken apart.
pub(crate) fn optional_values(reply: Option<Value>) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
    let Some(Value::Array(items)) = reply else {
        return Err(StoreError::Protocol(format!(
            "unexpected field values reply: {reply:?}"
        )));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => Ok(Some(bytes)),
            Value::SimpleString(s) => Ok(Some(s.into_bytes())),
            Value::Int(i) => Ok(Some(i.to_string().into_bytes())),
            // RESP3 scores.
            Value::Double(d) => Ok(Some(d.to_string().into_bytes())),
            other => Err(bad("field value", &other)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blobs split back into their events; a truncated blob is refused.
    #[test]
    fn blobs_split() {
        let mut blob = Vec::new();
        for event in [&b"one"[..], b"", &[7u8; 300]] {
            prost::encoding::encode_varint(event.len() as u64, &mut blob);
            blob.extend_from_slice(event);
        }
        let events = split_blob(&blob).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0], b"one");
        assert_eq!(events[2].len(), 300);
        assert_eq!(split_blob(&blob[..blob.len() - 1]), None);
        assert_eq!(split_blob(&[]), Some(Vec::new()));
    }

    /// Duplicates listed in `d` are skipped.
    /// An entry whose id is empty is a protocol error (found by the
    /// shaped-reply property test), not an entry nobody could ack.
    #[test]
    fn an_empty_entry_id_is_refused() {
        let mut value = Value::Array(vec![
            Value::BulkString(Vec::new()),
            Value::Array(Vec::new()),
        ]);
        assert!(matches!(entry(&mut value, 0), Err(StoreError::Protocol(_))));
    }

    #[test]
    fn duplicate_positions_are_skipped() {
        let mut blob = Vec::new();
        for event in [&b"a"[..], b"b", b"c"] {
            prost::encoding::encode_varint(event.len() as u64, &mut blob);
            blob.extend_from_slice(event);
        }
        let bulk = |b: &[u8]| Value::BulkString(b.to_vec());
        let mut value = Value::Array(vec![
            bulk(b"1-0"),
            Value::Array(vec![
                bulk(b"m"),
                bulk(b""),
                bulk(b"b"),
                bulk(&blob),
                bulk(b"d"),
                bulk(b"1"),
            ]),
        ]);
        let e = entry(&mut value, 0).unwrap();
        assert_eq!(e.events, vec![b"a".to_vec(), b"c".to_vec()]);
    }

    /// The stream-entry decoder on random input (what `cargo fuzz` would
    /// explore, as property tests on stable Rust; `PROPTEST_CASES` raises the
    /// count): whatever Redis could answer, decoding never panics, and blobs
    /// written by the append read back event for event.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// The name of one of an entry's fields (`m`, `e`, `b`, `d`).
        fn entry_field() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(&b"m"[..]),
                Just(&b"e"[..]),
                Just(&b"b"[..]),
                Just(&b"d"[..])
            ]
            .prop_map(|name| Value::BulkString(name.to_vec()))
        }

        /// Any RESP value, a few levels deep.
        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Nil),
                any::<i64>().prop_map(Value::Int),
                proptest::collection::vec(any::<u8>(), 0..48).prop_map(Value::BulkString),
                entry_field(),
                "[0-9]{1,3}-[0-9]{1,3}".prop_map(|id| Value::BulkString(id.into_bytes())),
                any::<f64>().prop_map(Value::Double),
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                proptest::collection::vec(inner, 0..8).prop_map(Value::Array)
            })
        }

        /// A reply shaped like XREADGROUP's (`[[key, [[id, [field, value,
        /// ...]], ...]]]`) whose ids, fields and values are random, so the
        /// entry decoder itself is reached.
        fn shaped_reply() -> impl Strategy<Value = Value> {
            let field = prop_oneof![entry_field(), value(),];
            let data = prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::BulkString),
                "[0-9,]{0,12}".prop_map(|d| Value::BulkString(d.into_bytes())),
                value(),
            ];
            let fields = proptest::collection::vec((field, data), 0..5).prop_map(|pairs| {
                Value::Array(pairs.into_iter().flat_map(|(f, d)| [f, d]).collect())
            });
            let id = prop_oneof![
                "[0-9]{1,13}-[0-9]{1,3}".prop_map(|id| Value::BulkString(id.into_bytes())),
                value(),
            ];
            let entry = prop_oneof![
                (id, fields).prop_map(|(id, fields)| Value::Array(vec![id, fields])),
                value(),
            ];
            proptest::collection::vec(entry, 0..4).prop_map(|entries| {
                Value::Array(vec![Value::Array(vec![
                    Value::BulkString(b"stream".to_vec()),
                    Value::Array(entries),
                ])])
            })
        }

        proptest! {
            /// Entries of any fields decode or are refused, never a panic; an
            /// entry decoded keeps its id.
            #[test]
            fn shaped_replies_decode_or_are_refused(mut reply in shaped_reply()) {
                match read_reply(&mut reply, 3) {
                    Ok(entries) => prop_assert!(entries.iter().all(|e| e.partition == 3 && !e.id.is_empty())),
                    Err(err) => prop_assert!(matches!(err, StoreError::Protocol(_)), "{err:?}"),
                }
            }
        }

        proptest! {
            /// Events put in a blob by the append come back, in order.
            #[test]
            fn blobs_round_trip(events in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
                let mut blob = Vec::new();
                for event in &events {
                    prost::encoding::encode_varint(event.len() as u64, &mut blob);
                    blob.extend_from_slice(event);
                }
                let split = split_blob(&blob).expect("a written blob splits");
                prop_assert_eq!(split, events.iter().map(Vec::as_slice).collect::<Vec<_>>());
            }

            /// Any bytes: split or refused, never a panic, never an event past
            /// the blob's end.
            #[test]
            fn any_blob_splits_or_is_refused(blob in proptest::collection::vec(any::<u8>(), 0..512)) {
                if let Some(events) = split_blob(&blob) {
                    let total: usize = events.iter().map(|e| e.len()).sum();
                    prop_assert!(total <= blob.len());
                }
            }

            /// Any reply to a read, a claim or an autoclaim decodes or is
            /// refused as a protocol error, never a panic.
            #[test]
            fn any_reply_decodes_or_is_refused(mut reply in value()) {
                let mut claim = reply.clone();
                let mut autoclaim = reply.clone();
                for result in [
                    read_reply(&mut reply, 0),
                    claim_reply(&mut claim, 0),
                    autoclaim_reply(&mut autoclaim, 0),
                ] {
                    if let Err(err) = result {
                        prop_assert!(matches!(err, StoreError::Protocol(_)), "{err:?}");
                    }
                }
            }
        }
    }
}
