//! The one check that [`EventRef`] reads what prost reads, shared by the
//! property tests (`tests/wire_properties.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/event_ref.rs`), so both hold the decoder to the
//! same rule.

use prost::Message as _;

use super::{EventRef, PayloadRef};
use crate::v1::Event;
use crate::v1::event::Payload;

/// Decodes `bytes` both ways; `None` when they agree (prost refuses them,
/// or [`EventRef`] reads every field as prost does), else what differs.
/// Labels compare by their distinct keys (the last of a key sent twice
/// wins in both); floats bit for bit.
pub fn disagreement(bytes: &[u8]) -> Option<String> {
    let Ok(event) = Event::decode(bytes) else {
        // Never a panic is all that is asked then (reaching here).
        let _ = EventRef::decode(bytes);
        return None;
    };
    match EventRef::decode(bytes) {
        Ok(view) => differs(&view, &event),
        Err(err) => Some(format!("prost accepts, EventRef refuses: {err:?}")),
    }
}

/// What of `view` differs from `event`, if anything.
pub fn differs(view: &EventRef<'_>, event: &Event) -> Option<String> {
    let mut keys: Vec<&[u8]> = view.labels.iter().map(|(k, _)| k).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut want: Vec<&[u8]> = event.labels.keys().map(String::as_bytes).collect();
    want.sort_unstable();
    let fields = [
        ("event_id", view.event_id == event.event_id.as_bytes()),
        ("device_id", view.device_id == event.device_id.as_bytes()),
        ("run_id", view.run_id == event.run_id.as_bytes()),
        ("observed_at", view.observed_at == event.observed_at),
        ("labels", keys == want),
        (
            "payload",
            same_payload(view.payload.as_ref(), event.payload.as_ref()),
        ),
    ];
    fields
        .iter()
        .find(|(_, same)| !same)
        .map(|(field, _)| format!("{field} differs: {view:?} / {event:?}"))
}

fn same_payload(view: Option<&PayloadRef<'_>>, event: Option<&Payload>) -> bool {
    match (view, event) {
        (None, None) => true,
        (Some(PayloadRef::Gpu(a)), Some(Payload::Gpu(b))) => {
            a.gpu_index == b.gpu_index
                && a.utilization.to_bits() == b.utilization.to_bits()
                && a.memory_used_bytes == b.memory_used_bytes
                && a.memory_total_bytes == b.memory_total_bytes
                && a.temperature_celsius.to_bits() == b.temperature_celsius.to_bits()
                && a.power_watts.to_bits() == b.power_watts.to_bits()
        }
        (Some(PayloadRef::Tokens(a)), Some(Payload::Tokens(b))) => {
            a.model == b.model.as_bytes()
                && a.tenant == b.tenant.as_bytes()
                && a.prompt_tokens == b.prompt_tokens
                && a.completion_tokens == b.completion_tokens
                && a.latency == b.latency
        }
        (Some(PayloadRef::Metric(a)), Some(Payload::Metric(b))) => {
            a.name == b.name.as_bytes()
                && a.value.to_bits() == b.value.to_bits()
                && a.unit == b.unit.as_bytes()
        }
        _ => false,
    }
}
