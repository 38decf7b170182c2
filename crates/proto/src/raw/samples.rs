//! Sample events for the raw codec's tests.

use prost_types::{Duration, Timestamp};

use crate::v1::event::Payload;
use crate::v1::{Event, GpuSample, Metric, TokenUsage};

/// Events with every field set, one of each payload kind, at edge values
/// (`u64::MAX`, negative nanos), then the empty event.
pub(crate) fn events() -> Vec<Event> {
    let base = Event {
        event_id: "ev-1".into(),
        device_id: "gpu-7".into(),
        observed_at: Some(Timestamp {
            seconds: 1_800_000_000,
            nanos: 5,
        }),
        labels: [("zone", "a"), ("node", "n-1"), ("arch", "")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        run_id: "run-1".into(),
        payload: None,
    };
    [
        Payload::Gpu(GpuSample {
            gpu_index: 3,
            utilization: 0.25,
            memory_used_bytes: 7,
            memory_total_bytes: u64::MAX,
            temperature_celsius: 61.5,
            power_watts: 300.0,
        }),
        Payload::Tokens(TokenUsage {
            model: "llama".into(),
            tenant: "team-ü".into(),
            prompt_tokens: 10,
            completion_tokens: 20,
            latency: Some(Duration {
                seconds: 1,
                nanos: -2,
            }),
        }),
        Payload::Metric(Metric {
            name: "fan".into(),
            value: -3.5,
            unit: "rpm".into(),
        }),
    ]
    .into_iter()
    .map(|payload| Event {
        payload: Some(payload),
        ..base.clone()
    })
    .chain([Event::default()])
    .collect()
}
