//! Applies merged here rather than in `apply.lua`.
//!
//! Merging in Lua cost Redis about 40 µs per device of an apply (a 250-device
//! apply held Redis for about 10 ms, and every append waited behind it:
//! `SLOWLOG` at 88k events/s). So a normal apply first reads every field it
//! touches, with the partition's version (see [`crate::keys::Keys::version`]),
//! in one `MULTI`; merges here; and hands `apply.lua` the values to write as
//! they are (its groups `h` and `z`), with the version it read. The script
//! writes them only if the version has not moved, which leaves Redis C
//! commands (`HSET`, `ZADD`) and no per-field Lua in the atomic step. When
//! another worker's apply (or a prune) of the partition came in between, the
//! script refuses, and the caller falls back to the merge in the script,
//! which cannot race.
//!
//! The read itself held Redis about 1.2 ms per apply at 224k events/s, so a
//! process keeps what its last apply of a partition wrote (`Written` in
//! `mod.rs`) and merges the next apply with those values: it reads only the
//! version and the fields that apply did not write, and nothing at all when
//! it wrote them all (the script's version check then stands for the read).
//! A version that moved means another writer came in between, and
//! everything is read again.
//!
//! The merges here are those of `apply.lua`, field for field: numbers add
//! as doubles, minimum and maximum keep the old value when it is a number
//! at least as good, summaries merge as [`crate::model::merge_summary`], and
//! records are MessagePack maps read and written by the same rules. Numbers
//! are written as text that reads back as the same double (whole numbers in
//! full, others in Rust's shortest round-trip form).

use crate::keys::record_parts;
use crate::model::{Op, Ops, merge_summary};

use super::{MAX_GROUP_WRITES, msgpack_summary, read_number, read_summary};

/// Whole numbers are exact as doubles below this.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// Where a target lives among the script's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot<'a> {
    /// An aggregate key (index into [`Ops::keys`]).
    Key(u16),
    /// The container hash of records (see [`crate::keys`]).
    Container(&'a str),
}

/// Every write of one Redis key, by field.
#[derive(Debug)]
pub(super) struct Target<'a> {
    pub slot: Slot<'a>,
    /// The key's name.
    pub key: &'a str,
    /// A sorted set (fields are members), else a hash.
    pub sorted_set: bool,
    /// Seconds to live (0: none), the longest expiry asked.
    pub ttl: u64,
    /// Field, member or record name, with its writes in order.
    pub fields: Vec<(&'a str, Vec<&'a Op>)>,
}

impl Target<'_> {
    /// Whether field values are records (MessagePack maps).
    fn records(&self) -> bool {
        matches!(self.slot, Slot::Container(_))
    }
}

/// `ops` by Redis key, in order of first use: records gathered into their
/// container, expiries folded into each key's time to live.
pub(super) fn targets(ops: &Ops) -> Vec<Target<'_>> {
    let mut out: Vec<Target<'_>> = Vec::new();
    let mut by_key: foldhash::HashMap<&str, usize> = foldhash::HashMap::default();
    let mut by_field: foldhash::HashMap<(usize, &str), usize> = foldhash::HashMap::default();
    for op in &ops.ops {
        let (k, sorted_set, field) = op.target();
        let Some(name) = ops.keys.get(usize::from(k)) else {
            continue;
        };
        // A record key that is written as a sorted set is a plain key, as
        // in `apply.lua`'s plan.
        let record = record_parts(name).filter(|_| !sorted_set);
        let (slot, key, field) = match record {
            Some((container, record)) => {
                (Slot::Container(container), container, field.map(|_| record))
            }
            None => (Slot::Key(k), name.as_str(), field),
        };
        let t = *by_key.entry(key).or_insert_with(|| {
            out.push(Target {
                slot,
                key,
                sorted_set,
                ttl: 0,
                fields: Vec::new(),
            });
            out.len() - 1
        });
        let Some(target) = out.get_mut(t) else {
            continue;
        };
        if let Op::Expire(_, secs) = op {
            target.ttl = target.ttl.max(*secs);
            continue;
        }
        let Some(field) = field else {
            continue;
        };
        target.sorted_set |= sorted_set;
        let f = *by_field.entry((t, field)).or_insert_with(|| {
            target.fields.push((field, Vec::new()));
            target.fields.len() - 1
        });
        if let Some((_, writes)) = target.fields.get_mut(f) {
            writes.push(op);
        }
    }
    out
}

/// The values of `target`'s fields after its writes, in order, given what
/// they held (`None`: absent), and for each whether it differs from what
/// it held (an unchanged value need not be sent: see [`pairs`]).
pub(super) fn merge(target: &Target<'_>, old: Vec<Option<Vec<u8>>>) -> (Vec<Vec<u8>>, Vec<bool>) {
    target
        .fields
        .iter()
        .zip(old)
        .map(|((_, writes), old)| {
            let new = if target.records() {
                merge_record(old.as_deref(), writes)
            } else {
                merge_value(old.as_deref(), writes)
            };
            let changed = old.as_deref() != Some(new.as_slice());
            (new, changed)
        })
        .unzip()
}

/// `(field, value)` pairs (a hash) or `(score, member)` pairs (a sorted set)
/// of `target` with `values`, in groups of at most [`MAX_GROUP_WRITES`],
/// leaving out the values not `changed`: a field already holding its value
/// costs the script nothing. (A device's last-seen time moves once a
/// second, so most applies leave the device states and the devices index
/// as they were: about 500 of an apply's 1500 values at 250 devices.)
pub(super) fn pairs<'t>(
    target: &'t Target<'_>,
    values: &'t [Vec<u8>],
    changed: &'t [bool],
) -> impl Iterator<Item = Vec<(&'t [u8], &'t [u8])>> {
    let all: Vec<(&[u8], &[u8])> = target
        .fields
        .iter()
        .zip(values)
        .zip(changed)
        .filter(|(_, changed)| **changed)
        .map(|(((name, _), value), _)| {
            if target.sorted_set {
                (value.as_slice(), name.as_bytes())
            } else {
                (name.as_bytes(), value.as_slice())
            }
        })
        .collect();
    let chunks: Vec<Vec<(&[u8], &[u8])>> = if all.is_empty() {
        // An expiry alone still needs its group.
        vec![Vec::new()]
    } else {
        all.chunks(MAX_GROUP_WRITES).map(<[_]>::to_vec).collect()
    };
    chunks.into_iter()
}

/// Text of `n` that reads back as the same double (`apply.lua`'s `number`).
fn number_text(n: f64) -> Vec<u8> {
    if n == n.floor() && n.abs() < EXACT {
        // A whole number below 2^53 is an exact i64: integer formatting,
        // not float formatting at precision 0 (which showed in profiles),
        // keeping the sign of a negative zero as `{:.0}` did.
        if n == 0.0 && n.is_sign_negative() {
            return b"-0".to_vec();
        }
        #[allow(clippy::cast_possible_truncation)]
        let whole = n as i64;
        whole.to_string().into_bytes()
    } else {
        n.to_string().into_bytes()
    }
}

/// A stored value as a number (Lua's `tonumber`), if it is one.
fn number_of(value: Option<&[u8]>) -> Option<f64> {
    std::str::from_utf8(value?).ok()?.trim().parse().ok()
}

/// One hash field or sorted-set score after `writes`.
fn merge_value(old: Option<&[u8]>, writes: &[&Op]) -> Vec<u8> {
    // A written value, once there is one; until then the old one.
    let mut current: Option<Vec<u8>> = None;
    for op in writes {
        let now = current.as_deref().or(old);
        let next = match op {
            Op::HashIncr(_, _, by) => number_text(number_of(now).unwrap_or(0.0) + *by as f64),
            Op::HashIncrFloat(_, _, by) | Op::ZIncr(_, _, by) => {
                number_text(number_of(now).unwrap_or(0.0) + by)
            }
            Op::HashMin(_, _, x) => match number_of(now) {
                Some(o) if o <= *x => continue,
                _ => x.to_string().into_bytes(),
            },
            Op::HashMax(_, _, x) | Op::ZMax(_, _, x) => match number_of(now) {
                Some(o) if o >= *x => continue,
                _ => x.to_string().into_bytes(),
            },
            Op::HashSet(_, _, v) => v.clone().into_bytes(),
            Op::HashSummary(_, _, delta) => {
                let base = now.and_then(super::unpack_summary);
                msgpack_summary(&merge_summary(base, *delta))
            }
            Op::Expire(..) => continue,
        };
        current = Some(next);
    }
    current.unwrap_or_else(|| old.map(<[u8]>::to_vec).unwrap_or_default())
}

/// A value of a record, as Lua holds it; text borrowed from the stored
/// record or from the write.
#[derive(Debug, Clone, PartialEq)]
enum Value<'a> {
    Number(f64),
    Text(&'a [u8]),
    Summary([f64; 4]),
}

impl Value<'_> {
    /// Lua's `tonumber`.
    fn number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            Value::Text(t) => number_of(Some(t)),
            Value::Summary(_) => None,
        }
    }
}

/// A MessagePack string off the front of `rd`, borrowed.
fn read_str<'b>(rd: &mut &'b [u8]) -> Option<&'b [u8]> {
    let len = rmp::decode::read_str_len(rd).ok()? as usize;
    let (text, rest) = (rd.get(..len)?, rd.get(len..)?);
    *rd = rest;
    Some(text)
}

/// A record as `apply.lua` packs it; `None` if it is not such a map (the
/// script then starts it afresh, and so does [`merge_record`]).
fn decode_record(bytes: &[u8]) -> Option<Vec<(&[u8], Value<'_>)>> {
    let mut rd = bytes;
    let len = rmp::decode::read_map_len(&mut rd).ok()?;
    let mut fields = Vec::with_capacity(len as usize + 4);
    for _ in 0..len {
        let name = read_str(&mut rd)?;
        let value = match rd.first()? {
            0xa0..=0xbf | 0xd9..=0xdb => Value::Text(read_str(&mut rd)?),
            0x90..=0x9f | 0xdc => Value::Summary(read_summary(&mut rd)?),
            0x00..=0x7f | 0xe0..=0xff | 0xca..=0xd3 => Value::Number(read_number(&mut rd)?),
            _ => return None,
        };
        fields.push((name, value));
    }
    rd.is_empty().then_some(fields)
}

/// A record as a MessagePack map: whole numbers as integers (as Lua's
/// `cmsgpack` writes them), others as float64.
fn encode_record(fields: &[(&[u8], Value<'_>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 24 * fields.len());
    // Writing to a Vec cannot fail.
    let text = |out: &mut Vec<u8>, t: &[u8]| {
        let _ = rmp::encode::write_str_len(out, t.len() as u32);
        out.extend_from_slice(t);
    };
    let _ = rmp::encode::write_map_len(&mut out, fields.len() as u32);
    for (name, value) in fields {
        text(&mut out, name);
        match value {
            Value::Number(n) if *n == n.floor() && n.abs() < EXACT => {
                let _ = rmp::encode::write_sint(&mut out, *n as i64);
            }
            Value::Number(n) => {
                let _ = rmp::encode::write_f64(&mut out, *n);
            }
            Value::Text(t) => text(&mut out, t),
            Value::Summary(s) => {
                let _ = rmp::encode::write_array_len(&mut out, 4);
                for v in s {
                    let _ = rmp::encode::write_f64(&mut out, *v);
                }
            }
        }
    }
    out
}

/// The value of a record's field after `op`, given the one it held;
/// `None`: unchanged.
fn record_write<'a>(op: &'a Op, old: Option<&Value<'_>>) -> Option<Value<'a>> {
    let added = |by: f64| Value::Number(old.and_then(Value::number).unwrap_or(0.0) + by);
    match op {
        Op::HashIncr(_, _, by) => Some(added(*by as f64)),
        Op::HashIncrFloat(_, _, by) | Op::ZIncr(_, _, by) => Some(added(*by)),
        Op::HashMin(_, _, x) => match old {
            Some(Value::Number(o)) if o <= x => None,
            _ => Some(Value::Number(*x)),
        },
        Op::HashMax(_, _, x) | Op::ZMax(_, _, x) => match old {
            Some(Value::Number(o)) if o >= x => None,
            _ => Some(Value::Number(*x)),
        },
        Op::HashSet(_, _, v) => Some(Value::Text(v.as_bytes())),
        Op::HashSummary(_, _, delta) => {
            let base = match old {
                Some(Value::Summary(s)) => Some(*s),
                _ => None,
            };
            Some(Value::Summary(merge_summary(base, *delta)))
        }
        Op::Expire(..) => None,
    }
}

/// One record after `writes` (`apply.lua`'s `apply_records`).
fn merge_record(old: Option<&[u8]>, writes: &[&Op]) -> Vec<u8> {
    let mut record = old.and_then(decode_record).unwrap_or_default();
    for op in writes {
        let (_, _, Some(name)) = op.target() else {
            continue;
        };
        let name = name.as_bytes();
        match record.iter_mut().find(|(n, _)| *n == name) {
            Some((_, value)) => {
                if let Some(v) = record_write(op, Some(value)) {
                    *value = v;
                }
            }
            None => {
                if let Some(v) = record_write(op, None) {
                    record.push((name, v));
                }
            }
        }
    }
    encode_record(&record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(list: Vec<Op>, keys: &[&str]) -> Ops {
        let mut ops = Ops::default();
        for k in keys {
            ops.key((*k).to_owned());
        }
        for op in list {
            ops.push(op);
        }
        ops
    }

    /// Whole numbers print as `{:.0}` printed them (integer formatting
    /// now), others as `to_string`: the stored text does not change.
    #[test]
    fn number_text_is_the_old_text() {
        let old = |n: f64| {
            if n == n.floor() && n.abs() < EXACT {
                format!("{n:.0}")
            } else {
                n.to_string()
            }
        };
        let samples = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            42.0,
            1e15,
            -1e15,
            EXACT - 1.0,
            -(EXACT - 1.0),
            EXACT,
            1e300,
            0.5,
            -2.25,
            123_456.789,
            f64::MIN_POSITIVE,
        ];
        for n in samples {
            assert_eq!(String::from_utf8(number_text(n)).unwrap(), old(n), "{n}");
        }
        proptest::proptest!(|(n in proptest::num::f64::NORMAL | proptest::num::f64::ZERO, whole in -(1i64 << 53) + 1..(1i64 << 53))| {
            proptest::prop_assert_eq!(String::from_utf8(number_text(n)).unwrap(), old(n));
            #[allow(clippy::cast_precision_loss)]
            let w = whole as f64;
            proptest::prop_assert_eq!(String::from_utf8(number_text(w)).unwrap(), old(w));
        });
    }

    #[test]
    fn targets_gather_records_and_fold_expiries() {
        let o = ops(
            vec![
                Op::HashIncr(0, "n".into(), 2),
                Op::HashIncr(1, "n".into(), 3),
                Op::ZIncr(2, "dev".into(), 1.5),
                Op::HashIncr(0, "n".into(), 4),
                Op::Expire(0, 60),
                Op::Expire(1, 90),
                Op::Expire(3, 30),
            ],
            &["c#a", "c#b", "top", "plain"],
        );
        let t = targets(&o);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].key, "c");
        assert_eq!(t[0].slot, Slot::Container("c"));
        assert_eq!(t[0].ttl, 90);
        let names: Vec<&str> = t[0].fields.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(t[0].fields[0].1.len(), 2);
        assert!(t[1].sorted_set);
        assert_eq!(t[1].slot, Slot::Key(2));
        assert_eq!((t[2].key, t[2].ttl, t[2].fields.len()), ("plain", 30, 0));
    }

    #[test]
    fn values_merge_as_the_script_does() {
        let incr = Op::HashIncr(0, "f".into(), 3);
        assert_eq!(merge_value(Some(&b"4"[..]), &[&incr]), b"7");
        assert_eq!(merge_value(None, &[&incr, &incr]), b"6");
        let add = Op::HashIncrFloat(0, "f".into(), 0.25);
        assert_eq!(merge_value(Some(&b"1"[..]), &[&add]), b"1.25");
        let min = Op::HashMin(0, "f".into(), 5.0);
        assert_eq!(merge_value(Some(&b"4"[..]), &[&min]), b"4");
        assert_eq!(merge_value(Some(&b"6"[..]), &[&min]), b"5");
        assert_eq!(merge_value(Some(&b"x"[..]), &[&min]), b"5");
        let max = Op::ZMax(0, "m".into(), 5.0);
        assert_eq!(merge_value(Some(&b"6"[..]), &[&max]), b"6");
        assert_eq!(merge_value(None, &[&max]), b"5");
        let set = Op::HashSet(0, "f".into(), "v".into());
        assert_eq!(merge_value(Some(&b"old"[..]), &[&set]), b"v");
        let s = Op::HashSummary(0, "f".into(), [1.0, 2.0, 2.0, 2.0]);
        let once = merge_value(None, &[&s]);
        let twice = merge_value(Some(once.as_slice()), &[&s]);
        assert_eq!(
            super::super::unpack_summary(&twice),
            Some([2.0, 4.0, 2.0, 2.0])
        );
    }

    #[test]
    fn records_merge_as_the_script_does() {
        let writes = [
            Op::HashIncr(0, "n".into(), 2),
            Op::HashSummary(0, "u".into(), [1.0, 0.5, 0.5, 0.5]),
            Op::HashSet(0, "unit".into(), "W".into()),
            Op::HashMax(0, "seen".into(), 10.0),
        ];
        let refs: Vec<&Op> = writes.iter().collect();
        let first = merge_record(None, &refs);
        let second = merge_record(Some(&first), &refs);
        let lower = Op::HashMax(0, "seen".into(), 3.0);
        let third = merge_record(Some(&second), &[&lower]);
        assert_eq!(
            super::super::unpack_record(&third),
            Some(vec![
                ("n".to_owned(), "4".to_owned()),
                ("seen".to_owned(), "10".to_owned()),
                ("u".to_owned(), "2 1 0.5 0.5".to_owned()),
                ("unit".to_owned(), "W".to_owned()),
            ])
        );
        // Not a record: started afresh, as the script does.
        let fresh = merge_record(Some(b"junk"), &refs[..1]);
        assert_eq!(
            super::super::unpack_record(&fresh),
            Some(vec![("n".to_owned(), "2".to_owned())])
        );
    }

    #[test]
    fn pairs_put_scores_first_in_sorted_sets() {
        let o = ops(vec![Op::ZIncr(0, "m".into(), 1.0)], &["z"]);
        let t = targets(&o);
        let (values, changed) = merge(&t[0], vec![Some(b"2".to_vec())]);
        let groups: Vec<_> = pairs(&t[0], &values, &changed).collect();
        assert_eq!(groups, vec![vec![(&b"3"[..], &b"m"[..])]]);
    }
}
