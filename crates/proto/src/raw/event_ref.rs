//! [`EventRef`]: an encoded `testbed.v1.Event` read in place.
//!
//! The hot paths (ingest validating every event it is sent, the worker
//! folding every event it reads) need each field once, and the text only as
//! bytes to check and compare. Decoding through a generated message, even
//! one with [`Bytes`](prost::bytes::Bytes) fields ([`super::EventView`]),
//! costs an atomic reference count per text field and a vector of labels
//! per event: in `perf` of ingest at 150k events/s that was about a fifth
//! of its CPU (`bench/README.md`, session 9). This reader borrows the
//! encoded bytes and allocates nothing: text fields are slices of them, and
//! labels are read from them again when iterated.
//!
//! It follows protobuf's decoding rules exactly as prost's generated code
//! does (the tests compare the two on every prefix and on single-byte
//! corruptions of real events): the last of a scalar or text field sent
//! twice wins, an embedded message sent twice is merged, a oneof member
//! replaces another, unknown fields (groups included) are skipped, and a
//! known field with the wrong wire type, a truncated field or an invalid
//! varint is an error. [`EventRef::holds_everything`] tells whether any of
//! that happened, that is whether the bytes can be stored as they came.
//!
//! prost has no borrowed decoding, and the schema is one small message, so
//! this is hand-written against the wire format rather than generated.

use std::fmt;

use prost_types::{Duration, Timestamp};

use super::tags::{self, event};
use crate::v1::GpuSample;

/// Why bytes are not an encoded `testbed.v1.Event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRefError(&'static str);

impl fmt::Display for EventRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for EventRefError {}

const TRUNCATED: EventRefError = EventRefError("a field runs past the end of the bytes");
const BAD_VARINT: EventRefError = EventRefError("invalid varint");
const BAD_KEY: EventRefError = EventRefError("invalid field key");
const WIRE_TYPE: EventRefError = EventRefError("a known field has the wrong wire type");
const GROUP: EventRefError = EventRefError("unbalanced or too deeply nested group");

/// Nesting allowed inside unknown groups, as prost's recursion limit.
const MAX_GROUP_DEPTH: u32 = 100;

// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A cursor over encoded bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, EventRefError> {
        // Keys, lengths and most numbers here fit in one byte.
        if let Some((&byte, rest)) = self.buf.split_first()
            && byte < 0x80
        {
            self.buf = rest;
            return Ok(u64::from(byte));
        }
        self.varint_slow()
    }

    fn varint_slow(&mut self) -> Result<u64, EventRefError> {
        let mut value = 0u64;
        for (i, &byte) in self.buf.iter().enumerate().take(10) {
            // The tenth byte holds bit 63 only.
            if i == 9 && byte > 1 {
                return Err(BAD_VARINT);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(if self.buf.len() < 10 {
            TRUNCATED
        } else {
            BAD_VARINT
        })
    }

    #[inline]
    fn take(&mut self, len: usize) -> Result<&'a [u8], EventRefError> {
        if len > self.buf.len() {
            return Err(TRUNCATED);
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    #[inline]
    fn len_delimited(&mut self) -> Result<&'a [u8], EventRefError> {
        let len = usize::try_from(self.varint()?).map_err(|_| TRUNCATED)?;
        self.take(len)
    }

    fn fixed64(&mut self) -> Result<u64, EventRefError> {
        let bytes = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    fn double(&mut self) -> Result<f64, EventRefError> {
        self.fixed64().map(f64::from_bits)
    }

    /// The next key as (field number, wire type).
    #[inline]
    fn key(&mut self) -> Result<(u32, u8), EventRefError> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| BAD_KEY)?;
        let (tag, wire) = (key >> 3, (key & 7) as u8);
        if tag == 0 || wire > FIXED32 {
            return Err(BAD_KEY);
        }
        Ok((tag, wire))
    }

    /// Skips the value of an unknown field `tag` of wire type `wire`.
    fn skip(&mut self, tag: u32, wire: u8, depth: u32) -> Result<(), EventRefError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            START_GROUP => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(GROUP);
                }
                loop {
                    let (inner, inner_wire) = self.key()?;
                    if inner_wire == END_GROUP {
                        return if inner == tag { Ok(()) } else { Err(GROUP) };
                    }
                    self.skip(inner, inner_wire, depth + 1)?;
                }
            }
            // An end-group key with no group open.
            _ => Err(GROUP),
        }
    }
}

/// Reads the fields of one message from `buf`, calling `field` for each
/// (which returns false when it does not know the field). Unknown fields
/// are skipped; true when there were none.
#[inline]
fn fields<'a>(
    buf: &'a [u8],
    mut field: impl FnMut(Key, &mut Reader<'a>) -> Result<bool, EventRefError>,
) -> Result<bool, EventRefError> {
    let mut reader = Reader::new(buf);
    let mut known = true;
    while !reader.is_empty() {
        let at = buf.len() - reader.buf.len();
        let (tag, wire) = reader.key()?;
        if !field(Key { tag, wire, at }, &mut reader)? {
            reader.skip(tag, wire, 0)?;
            known = false;
        }
    }
    Ok(known)
}

/// Reads a message whose known fields are all singular, as [`fields`]
/// does, and clears `*exact` when a field was unknown or sent twice.
#[inline]
fn singular_fields<'a>(
    buf: &'a [u8],
    exact: &mut bool,
    mut field: impl FnMut(u32, u8, &mut Reader<'a>) -> Result<bool, EventRefError>,
) -> Result<(), EventRefError> {
    let mut seen = Seen::default();
    let mut twice = false;
    let known = fields(buf, |Key { tag, wire, .. }, r| {
        let is_known = field(tag, wire, r)?;
        twice |= is_known && !seen.first(tag);
        Ok(is_known)
    })?;
    *exact &= known && !twice;
    Ok(())
}

/// A field's key, and where it starts in its message.
#[derive(Clone, Copy)]
struct Key {
    tag: u32,
    wire: u8,
    at: usize,
}

/// Fields already seen in one message, to notice one sent twice.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    /// Marks `tag` (below 32) seen; false if it was already.
    fn first(&mut self, tag: u32) -> bool {
        let bit = 1u32 << (tag % 32);
        let first = self.0 & bit == 0;
        self.0 |= bit;
        first
    }
}

/// Checks the wire type of a known field.
fn expect(wire: u8, expected: u8) -> Result<(), EventRefError> {
    if wire == expected {
        Ok(())
    } else {
        Err(WIRE_TYPE)
    }
}

/// The fields of an encoded `Timestamp` or `Duration` (the same layout:
/// `int64 seconds = 1; int32 nanos = 2;`) merged into `(seconds, nanos)`.
fn seconds_nanos(buf: &[u8], into: &mut (i64, i32), exact: &mut bool) -> Result<(), EventRefError> {
    use tags::timestamp::{NANOS, SECONDS};
    const _: () = assert!(
        tags::duration::SECONDS == SECONDS && tags::duration::NANOS == NANOS,
        "Timestamp and Duration no longer share a layout"
    );
    singular_fields(buf, exact, |tag, wire, r| {
        match tag {
            SECONDS => {
                expect(wire, VARINT)?;
                into.0 = r.varint()? as i64;
            }
            NANOS => {
                expect(wire, VARINT)?;
                into.1 = r.varint()? as i32;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })
}

/// `testbed.v1.TokenUsage`, text as bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenUsageRef<'a> {
    /// `model`.
    pub model: &'a [u8],
    /// `tenant`.
    pub tenant: &'a [u8],
    /// `prompt_tokens`.
    pub prompt_tokens: u64,
    /// `completion_tokens`.
    pub completion_tokens: u64,
    /// `latency`.
    pub latency: Option<Duration>,
}

/// `testbed.v1.Metric`, text as bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MetricRef<'a> {
    /// `name`.
    pub name: &'a [u8],
    /// `value`.
    pub value: f64,
    /// `unit`.
    pub unit: &'a [u8],
}

/// `Event.payload`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PayloadRef<'a> {
    /// `gpu` (numbers only).
    Gpu(GpuSample),
    /// `tokens`.
    Tokens(TokenUsageRef<'a>),
    /// `metric`.
    Metric(MetricRef<'a>),
}

impl<'a> PayloadRef<'a> {
    /// Merges an encoded `GpuSample` into `gpu`.
    fn merge_gpu(
        buf: &'a [u8],
        gpu: &mut GpuSample,
        exact: &mut bool,
    ) -> Result<(), EventRefError> {
        use tags::gpu::{
            GPU_INDEX, MEMORY_TOTAL_BYTES, MEMORY_USED_BYTES, POWER_WATTS, TEMPERATURE_CELSIUS,
            UTILIZATION,
        };
        singular_fields(buf, exact, |tag, wire, r| {
            match tag {
                GPU_INDEX => {
                    expect(wire, VARINT)?;
                    gpu.gpu_index = r.varint()? as u32;
                }
                UTILIZATION => {
                    expect(wire, FIXED64)?;
                    gpu.utilization = r.double()?;
                }
                MEMORY_USED_BYTES => {
                    expect(wire, VARINT)?;
                    gpu.memory_used_bytes = r.varint()?;
                }
                MEMORY_TOTAL_BYTES => {
                    expect(wire, VARINT)?;
                    gpu.memory_total_bytes = r.varint()?;
                }
                TEMPERATURE_CELSIUS => {
                    expect(wire, FIXED64)?;
                    gpu.temperature_celsius = r.double()?;
                }
                POWER_WATTS => {
                    expect(wire, FIXED64)?;
                    gpu.power_watts = r.double()?;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })
    }

    fn merge_tokens(
        buf: &'a [u8],
        tokens: &mut TokenUsageRef<'a>,
        exact: &mut bool,
    ) -> Result<(), EventRefError> {
        use tags::tokens::{COMPLETION_TOKENS, LATENCY, MODEL, PROMPT_TOKENS, TENANT};
        let mut inner_exact = true;
        singular_fields(buf, exact, |tag, wire, r| {
            match tag {
                MODEL => {
                    expect(wire, LEN)?;
                    tokens.model = r.len_delimited()?;
                }
                TENANT => {
                    expect(wire, LEN)?;
                    tokens.tenant = r.len_delimited()?;
                }
                PROMPT_TOKENS => {
                    expect(wire, VARINT)?;
                    tokens.prompt_tokens = r.varint()?;
                }
                COMPLETION_TOKENS => {
                    expect(wire, VARINT)?;
                    tokens.completion_tokens = r.varint()?;
                }
                LATENCY => {
                    expect(wire, LEN)?;
                    let mut latency = tokens.latency.map_or((0, 0), |d| (d.seconds, d.nanos));
                    seconds_nanos(r.len_delimited()?, &mut latency, &mut inner_exact)?;
                    tokens.latency = Some(Duration {
                        seconds: latency.0,
                        nanos: latency.1,
                    });
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        *exact &= inner_exact;
        Ok(())
    }

    fn merge_metric(
        buf: &'a [u8],
        metric: &mut MetricRef<'a>,
        exact: &mut bool,
    ) -> Result<(), EventRefError> {
        use tags::metric::{NAME, UNIT, VALUE};
        singular_fields(buf, exact, |tag, wire, r| {
            match tag {
                NAME => {
                    expect(wire, LEN)?;
                    metric.name = r.len_delimited()?;
                }
                VALUE => {
                    expect(wire, FIXED64)?;
                    metric.value = r.double()?;
                }
                UNIT => {
                    expect(wire, LEN)?;
                    metric.unit = r.len_delimited()?;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })
    }
}

/// The labels of an [`EventRef`]: the map's entries as they came (a key
/// sent twice appears twice; a map keeps the last), read from the encoded
/// event again on every iteration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Labels<'a> {
    /// The part of the encoded event from the first entry (its field 4)
    /// to the end of the last: other fields may lie between them.
    span: &'a [u8],
    len: usize,
}

impl<'a> Labels<'a> {
    /// Entries, counting a key sent twice twice.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `(key, value)` of each entry, in the order sent.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut reader = Reader::new(self.span);
        // The event was read whole when this was built, so reading it again
        // cannot fail; the iterator ends at the first error all the same.
        std::iter::from_fn(move || {
            while !reader.is_empty() {
                let (tag, wire) = reader.key().ok()?;
                if tag == event::LABELS && wire == LEN {
                    let entry = reader.len_delimited().ok()?;
                    return label_entry(entry, &mut true).ok();
                }
                reader.skip(tag, wire, 0).ok()?;
            }
            None
        })
    }
}

/// The key and value of an encoded map entry.
fn label_entry<'a>(buf: &'a [u8], exact: &mut bool) -> Result<(&'a [u8], &'a [u8]), EventRefError> {
    let (mut key, mut value) = (&[][..], &[][..]);
    singular_fields(buf, exact, |tag, wire, r| {
        match tag {
            tags::label::KEY => {
                expect(wire, LEN)?;
                key = r.len_delimited()?;
            }
            tags::label::VALUE => {
                expect(wire, LEN)?;
                value = r.len_delimited()?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((key, value))
}

/// An encoded `testbed.v1.Event`, read in place: text fields are slices
/// of the encoded bytes (whoever reads them checks that they are UTF-8),
/// labels are read from them again when iterated, and nothing is copied,
/// allocated or reference-counted. Decoding follows protobuf's rules as
/// prost's generated code does: the last of a field sent twice wins, an
/// embedded message sent twice is merged, a oneof member replaces another,
/// unknown fields are skipped, and a known field with the wrong wire type,
/// a truncated field or an invalid varint is an error.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EventRef<'a> {
    /// `event_id`.
    pub event_id: &'a [u8],
    /// `device_id`.
    pub device_id: &'a [u8],
    /// `observed_at`.
    pub observed_at: Option<Timestamp>,
    /// `labels`.
    pub labels: Labels<'a>,
    /// `run_id`.
    pub run_id: &'a [u8],
    /// `payload`.
    pub payload: Option<PayloadRef<'a>>,
    exact: bool,
}

impl<'a> EventRef<'a> {
    /// Reads an encoded event.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, EventRefError> {
        const _: () = assert!(
            event::TOKENS == event::GPU + 1 && event::METRIC == event::GPU + 2,
            "the payload's members are no longer 10, 11, 12 in a row"
        );
        let mut event = EventRef::default();
        // Offsets of the label entries' span: from the first one's key to
        // the end of the last one.
        let (mut labels_from, mut labels_to) = (usize::MAX, 0);
        let mut exact = true;
        let mut seen = Seen::default();
        let mut twice = false;
        let known = fields(bytes, |Key { tag, wire, at }, r| {
            // Fields that may repeat or replace one another are not
            // "sent twice" by being seen again.
            let mut single = true;
            match tag {
                event::EVENT_ID => {
                    expect(wire, LEN)?;
                    event.event_id = r.len_delimited()?;
                }
                event::DEVICE_ID => {
                    expect(wire, LEN)?;
                    event.device_id = r.len_delimited()?;
                }
                event::OBSERVED_AT => {
                    expect(wire, LEN)?;
                    let mut at = event.observed_at.map_or((0, 0), |t| (t.seconds, t.nanos));
                    seconds_nanos(r.len_delimited()?, &mut at, &mut exact)?;
                    event.observed_at = Some(Timestamp {
                        seconds: at.0,
                        nanos: at.1,
                    });
                }
                event::LABELS => {
                    expect(wire, LEN)?;
                    label_entry(r.len_delimited()?, &mut exact)?;
                    labels_from = labels_from.min(at);
                    labels_to = bytes.len() - r.buf.len();
                    event.labels.len += 1;
                    single = false;
                }
                event::RUN_ID => {
                    expect(wire, LEN)?;
                    event.run_id = r.len_delimited()?;
                }
                // The payload oneof's members, in a row.
                event::GPU..=event::METRIC => {
                    expect(wire, LEN)?;
                    let buf = r.len_delimited()?;
                    // A oneof member merges into itself and replaces another.
                    event.payload = Some(match (tag, event.payload) {
                        (event::GPU, previous) => {
                            let mut gpu = match previous {
                                Some(PayloadRef::Gpu(gpu)) => gpu,
                                _ => GpuSample::default(),
                            };
                            PayloadRef::merge_gpu(buf, &mut gpu, &mut exact)?;
                            PayloadRef::Gpu(gpu)
                        }
                        (event::TOKENS, previous) => {
                            let mut tokens = match previous {
                                Some(PayloadRef::Tokens(tokens)) => tokens,
                                _ => TokenUsageRef::default(),
                            };
                            PayloadRef::merge_tokens(buf, &mut tokens, &mut exact)?;
                            PayloadRef::Tokens(tokens)
                        }
                        (_, previous) => {
                            let mut metric = match previous {
                                Some(PayloadRef::Metric(metric)) => metric,
                                _ => MetricRef::default(),
                            };
                            PayloadRef::merge_metric(buf, &mut metric, &mut exact)?;
                            PayloadRef::Metric(metric)
                        }
                    });
                    // Any second payload is a field sent twice.
                    twice |= !seen.first(event::GPU);
                    single = false;
                }
                _ => return Ok(false),
            }
            if single {
                twice |= !seen.first(tag);
            }
            Ok(true)
        })?;
        event.exact = known && exact && !twice;
        if event.labels.len > 0 {
            event.labels.span = bytes.get(labels_from..labels_to).unwrap_or_default();
        }
        Ok(event)
    }

    /// Whether the bytes hold exactly what this view holds: no unknown
    /// field and no field sent twice (at any depth). Such bytes decode to
    /// the same event everywhere and can be stored as they came; otherwise
    /// a server re-encodes the event (through [`super::EventView`]).
    pub fn holds_everything(&self) -> bool {
        self.exact
    }
}

#[cfg(test)]
mod tests;
