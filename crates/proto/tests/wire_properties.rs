//! Properties of the hand-written wire reader ([`EventRef`]) against
//! prost's generated code, on random input: what `cargo fuzz` would
//! explore, run as property tests on stable Rust (the test command runs
//! them; `PROPTEST_CASES` raises the count).
//!
//! - Any event prost encodes: read back by `EventRef`, field for field.
//! - Any bytes, and valid events with junk spliced in or cut short:
//!   decoding never panics, and whatever prost decodes, `EventRef` decodes
//!   to the same fields.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use testbed_proto::prost::Message as _;
use testbed_proto::prost_types::{Duration, Timestamp};
use testbed_proto::raw::{EventRef, agree};
use testbed_proto::v1::event::Payload;
use testbed_proto::v1::{Event, GpuSample, Metric, TokenUsage};

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9-]{1,12}",
        any::<String>(),
        "\\PC{0,64}",
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-0.0),
        -1e3..1e3f64
    ]
}

fn payload() -> impl Strategy<Value = Option<Payload>> {
    let gpu = (
        any::<u32>(),
        float(),
        any::<u64>(),
        any::<u64>(),
        float(),
        float(),
    )
        .prop_map(
            |(gpu_index, utilization, used, total, temperature, power)| {
                Some(Payload::Gpu(GpuSample {
                    gpu_index,
                    utilization,
                    memory_used_bytes: used,
                    memory_total_bytes: total,
                    temperature_celsius: temperature,
                    power_watts: power,
                }))
            },
        );
    let tokens = (
        text(),
        text(),
        any::<u64>(),
        any::<u64>(),
        proptest::option::of((any::<i64>(), any::<i32>())),
    )
        .prop_map(|(model, tenant, prompt, completion, latency)| {
            Some(Payload::Tokens(TokenUsage {
                model,
                tenant,
                prompt_tokens: prompt,
                completion_tokens: completion,
                latency: latency.map(|(seconds, nanos)| Duration { seconds, nanos }),
            }))
        });
    let metric = (text(), float(), text())
        .prop_map(|(name, value, unit)| Some(Payload::Metric(Metric { name, value, unit })));
    prop_oneof![Just(None), gpu, tokens, metric]
}

fn event() -> impl Strategy<Value = Event> {
    (
        text(),
        text(),
        proptest::option::of((any::<i64>(), any::<i32>())),
        proptest::collection::hash_map(text(), text(), 0..8),
        text(),
        payload(),
    )
        .prop_map(|(event_id, device_id, at, labels, run_id, payload)| Event {
            event_id,
            device_id,
            observed_at: at.map(|(seconds, nanos)| Timestamp { seconds, nanos }),
            labels,
            run_id,
            payload,
        })
}

/// `view` holds what `event` holds ([`agree::differs`]).
fn same(view: &EventRef<'_>, event: &Event) -> Result<(), TestCaseError> {
    match agree::differs(view, event) {
        None => Ok(()),
        Some(why) => Err(TestCaseError::fail(why)),
    }
}

/// Decodes `bytes` both ways: never a panic, and the same fields whenever
/// prost accepts them ([`agree::disagreement`], the fuzz target's rule).
fn agrees_with_prost(bytes: &[u8]) -> Result<(), TestCaseError> {
    match agree::disagreement(bytes) {
        None => Ok(()),
        Some(why) => Err(TestCaseError::fail(why)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any event prost encodes reads back field for field (as prost reads
    /// it back: a -0.0 is not sent, being proto3's default), and holds
    /// nothing else.
    #[test]
    fn encoded_events_read_back(event in event()) {
        let bytes = event.encode_to_vec();
        let view = EventRef::decode(&bytes).unwrap();
        same(&view, &Event::decode(bytes.as_slice()).unwrap())?;
        prop_assert!(view.holds_everything());
    }

    /// Random bytes never make the decoder panic; what prost accepts,
    /// `EventRef` reads the same.
    #[test]
    fn any_bytes_decode_like_prost(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        agrees_with_prost(&bytes)?;
    }

    /// A valid event with random bytes spliced in, or cut short: no panic,
    /// and agreement with prost whenever prost accepts it.
    #[test]
    fn damaged_events_decode_like_prost(
        event in event(),
        at in any::<prop::sample::Index>(),
        junk in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut bytes = event.encode_to_vec();
        let at = at.index(bytes.len() + 1);
        bytes.splice(at..at, junk);
        agrees_with_prost(&bytes)?;
        bytes.truncate(at);
        agrees_with_prost(&bytes)?;
    }
}
