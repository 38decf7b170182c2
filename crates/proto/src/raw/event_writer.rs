//! An encoded `testbed.v1.Event` written field by field: the encoding
//! counterpart of [`EventRef`](super::EventRef), with the same field
//! numbers ([`super::tags`]).
//!
//! A load generator encodes millions of events a second, most of whose
//! parts do not change from one event to the next (a device's id and
//! labels, the run id, a batch's `observed_at`). Building an `Event` and
//! encoding it through prost costs a dozen allocations per event; these
//! functions write one field each at the end of a buffer, so a caller can
//! encode the unchanging parts once and splice them in (protobuf fields
//! may come in any order). Each writes its field exactly as prost does:
//! the same bytes, and nothing for a field at its default (0, empty), as
//! proto3 has it.
//!
//! Every function is `#[inline]`: the callers are in other crates, and
//! without it the simulator's `sim/generate/batch1000` bench was 2.5%
//! slower than with the same code inside the simulator.

use prost::encoding::{WireType, encode_key, encode_varint};
use prost_types::{Duration, Timestamp};

use super::event_ref::{MetricRef, PayloadRef, TokenUsageRef};
use super::tags::{self, event};
use crate::v1::GpuSample;

/// `event_id`, the concatenation of `parts` (e.g. a run id, `-` and a
/// number), written without joining them first.
#[inline]
pub fn event_id(parts: &[&[u8]], buf: &mut Vec<u8>) {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    if len > 0 {
        encode_key(event::EVENT_ID, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        for part in parts {
            buf.extend_from_slice(part);
        }
    }
}

/// `device_id`.
#[inline]
pub fn device_id(id: &str, buf: &mut Vec<u8>) {
    text(event::DEVICE_ID, id, buf);
}

/// `observed_at`.
#[inline]
pub fn observed_at(at: &Timestamp, buf: &mut Vec<u8>) {
    use tags::timestamp::{NANOS, SECONDS};
    nested(event::OBSERVED_AT, buf, |buf| {
        uint(SECONDS, at.seconds as u64, buf);
        uint(NANOS, i64::from(at.nanos) as u64, buf);
    });
}

/// One entry of `labels`.
#[inline]
pub fn label(key: &str, value: &str, buf: &mut Vec<u8>) {
    nested(event::LABELS, buf, |buf| {
        text(tags::label::KEY, key, buf);
        text(tags::label::VALUE, value, buf);
    });
}

/// `run_id`.
#[inline]
pub fn run_id(id: &str, buf: &mut Vec<u8>) {
    text(event::RUN_ID, id, buf);
}

/// The `payload` oneof: `gpu`, `tokens` or `metric`.
#[inline]
pub fn payload(payload: &PayloadRef<'_>, buf: &mut Vec<u8>) {
    match payload {
        PayloadRef::Gpu(gpu) => nested(event::GPU, buf, |buf| gpu_sample(gpu, buf)),
        PayloadRef::Tokens(tokens) => nested(event::TOKENS, buf, |buf| token_usage(tokens, buf)),
        PayloadRef::Metric(m) => nested(event::METRIC, buf, |buf| metric(m, buf)),
    }
}

#[inline]
fn gpu_sample(gpu: &GpuSample, buf: &mut Vec<u8>) {
    use tags::gpu::{
        GPU_INDEX, MEMORY_TOTAL_BYTES, MEMORY_USED_BYTES, POWER_WATTS, TEMPERATURE_CELSIUS,
        UTILIZATION,
    };
    uint(GPU_INDEX, u64::from(gpu.gpu_index), buf);
    double(UTILIZATION, gpu.utilization, buf);
    uint(MEMORY_USED_BYTES, gpu.memory_used_bytes, buf);
    uint(MEMORY_TOTAL_BYTES, gpu.memory_total_bytes, buf);
    double(TEMPERATURE_CELSIUS, gpu.temperature_celsius, buf);
    double(POWER_WATTS, gpu.power_watts, buf);
}

#[inline]
fn token_usage(tokens: &TokenUsageRef<'_>, buf: &mut Vec<u8>) {
    use tags::tokens::{COMPLETION_TOKENS, LATENCY, MODEL, PROMPT_TOKENS, TENANT};
    bytes(MODEL, tokens.model, buf);
    bytes(TENANT, tokens.tenant, buf);
    uint(PROMPT_TOKENS, tokens.prompt_tokens, buf);
    uint(COMPLETION_TOKENS, tokens.completion_tokens, buf);
    if let Some(latency) = &tokens.latency {
        nested(LATENCY, buf, |buf| duration(latency, buf));
    }
}

#[inline]
fn duration(d: &Duration, buf: &mut Vec<u8>) {
    use tags::duration::{NANOS, SECONDS};
    uint(SECONDS, d.seconds as u64, buf);
    uint(NANOS, i64::from(d.nanos) as u64, buf);
}

#[inline]
fn metric(metric: &MetricRef<'_>, buf: &mut Vec<u8>) {
    use tags::metric::{NAME, UNIT, VALUE};
    bytes(NAME, metric.name, buf);
    double(VALUE, metric.value, buf);
    bytes(UNIT, metric.unit, buf);
}

/// A varint field (uint32, uint64, int64 and int32 alike: negative ones
/// as their 64-bit two's complement, as protobuf has it), unless 0.
#[inline]
fn uint(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

/// A double field, unless 0.
#[inline]
fn double(tag: u32, value: f64, buf: &mut Vec<u8>) {
    if value != 0.0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// A string field, unless empty.
#[inline]
fn text(tag: u32, value: &str, buf: &mut Vec<u8>) {
    bytes(tag, value.as_bytes(), buf);
}

/// A string or bytes field, unless empty.
#[inline]
fn bytes(tag: u32, value: &[u8], buf: &mut Vec<u8>) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value);
    }
}

/// A message field written by `body`: its length goes first, so one byte
/// is set aside for it and widened afterwards in the rare case it needs
/// more (a message of 128 bytes or over).
#[inline]
fn nested(tag: u32, buf: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    encode_key(tag, WireType::LengthDelimited, buf);
    let at = buf.len();
    buf.push(0);
    body(buf);
    let len = buf.len() - at - 1;
    if let Ok(byte @ 0..=127) = u8::try_from(len) {
        buf[at] = byte;
    } else {
        let mut prefix = Vec::with_capacity(3);
        encode_varint(len as u64, &mut prefix);
        buf.splice(at..=at, prefix);
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::v1::event::Payload;
    use crate::v1::{Event, Metric, TokenUsage};

    /// Every payload kind, with negative numbers and zeros among them.
    fn payloads() -> Vec<Payload> {
        vec![
            Payload::Gpu(GpuSample {
                gpu_index: 3,
                utilization: 0.25,
                memory_used_bytes: 0,
                memory_total_bytes: u64::MAX,
                temperature_celsius: -61.5,
                power_watts: 300.0,
            }),
            Payload::Tokens(TokenUsage {
                model: "llama".into(),
                tenant: "team-ü".into(),
                prompt_tokens: 10,
                completion_tokens: 0,
                latency: Some(Duration {
                    seconds: -1,
                    nanos: -2,
                }),
            }),
            Payload::Tokens(TokenUsage {
                model: String::new(),
                latency: None,
                ..TokenUsage::default()
            }),
            Payload::Metric(Metric {
                name: "fan".into(),
                value: -3.5,
                unit: String::new(),
            }),
        ]
    }

    /// The borrowed form of a generated payload, as a writer gets it.
    fn as_ref(payload: &Payload) -> PayloadRef<'_> {
        match payload {
            Payload::Gpu(gpu) => PayloadRef::Gpu(*gpu),
            Payload::Tokens(t) => PayloadRef::Tokens(TokenUsageRef {
                model: t.model.as_bytes(),
                tenant: t.tenant.as_bytes(),
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens,
                latency: t.latency,
            }),
            Payload::Metric(m) => PayloadRef::Metric(MetricRef {
                name: m.name.as_bytes(),
                value: m.value,
                unit: m.unit.as_bytes(),
            }),
        }
    }

    /// An event written field by field in prost's order is byte for byte
    /// prost's encoding of it, for every payload kind, negative
    /// timestamps and durations included.
    #[test]
    fn written_events_are_prosts_bytes() {
        for payload in payloads() {
            let event = Event {
                event_id: "run-1-42".into(),
                device_id: "gpu-7".into(),
                observed_at: Some(Timestamp {
                    seconds: 1_800_000_000,
                    nanos: -5,
                }),
                labels: [("zone".to_owned(), "a".to_owned())].into(),
                run_id: "run-1".into(),
                payload: Some(payload.clone()),
            };
            let mut ours = Vec::new();
            event_id(&[b"run-1", b"-", b"42"], &mut ours);
            device_id(&event.device_id, &mut ours);
            observed_at(event.observed_at.as_ref().unwrap(), &mut ours);
            label("zone", "a", &mut ours);
            run_id(&event.run_id, &mut ours);
            super::payload(&as_ref(&payload), &mut ours);
            assert_eq!(ours, event.encode_to_vec(), "{payload:?}");
        }
    }

    /// Fields at their defaults are left out, as prost leaves them out.
    #[test]
    fn defaults_are_left_out() {
        let mut ours = Vec::new();
        event_id(&[b"", b""], &mut ours);
        device_id("", &mut ours);
        run_id("", &mut ours);
        observed_at(&Timestamp::default(), &mut ours);
        label("", "", &mut ours);
        let event = Event {
            observed_at: Some(Timestamp::default()),
            labels: [(String::new(), String::new())].into(),
            ..Event::default()
        };
        assert_eq!(ours, event.encode_to_vec());
    }

    /// A payload of 128 bytes or more gets its length widened in place.
    #[test]
    fn long_payloads_are_encoded_as_prost_does() {
        for len in [100, 127, 128, 200, 20_000] {
            let name = "m".repeat(len);
            let payload = Payload::Metric(Metric {
                name,
                value: 1.5,
                unit: "By".into(),
            });
            let mut ours = vec![7];
            super::payload(&as_ref(&payload), &mut ours);
            let mut prost = vec![7];
            payload.encode(&mut prost);
            assert_eq!(ours, prost, "name of {len}");
        }
    }
}
