//! Events for tests: a valid GPU event to send (or spoil), and an
//! answer's rejections in a form `assert_eq!` compares.

use std::time::{SystemTime, UNIX_EPOCH};

use testbed_proto::prost_types::Timestamp;
use testbed_proto::v1::event::Payload;
use testbed_proto::v1::{Event, EventRejection, GpuSample};

/// A valid GPU event of `device_id` observed at `observed_at` (whole
/// seconds), without labels or run.
pub fn gpu_event(event_id: &str, device_id: &str, observed_at: SystemTime) -> Event {
    let seconds = observed_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Event {
        event_id: event_id.to_owned(),
        device_id: device_id.to_owned(),
        observed_at: Some(Timestamp {
            seconds: seconds as i64,
            nanos: 0,
        }),
        labels: Default::default(),
        run_id: String::new(),
        payload: Some(Payload::Gpu(GpuSample {
            gpu_index: 0,
            utilization: 0.5,
            memory_used_bytes: 1,
            memory_total_bytes: 2,
            temperature_celsius: 40.0,
            power_watts: 100.0,
        })),
    }
}

/// Each rejection's index, field and event id, in order.
pub fn rejected(rejections: &[EventRejection]) -> Vec<(u32, &str, &str)> {
    rejections
        .iter()
        .map(|r| (r.index, r.field.as_str(), r.event_id.as_str()))
        .collect()
}
