//! Builders of `testbed.v1.Event`, one per payload kind, observed now
//! (UTC). Labels and `run_id` are plain fields of the returned message:
//! set them on it.

use std::time::SystemTime;

use testbed_proto::v1::{Event, GpuSample, Metric, TokenUsage, event::Payload};

fn event(event_id: &str, device_id: &str, payload: Payload) -> Event {
    Event {
        event_id: event_id.to_owned(),
        device_id: device_id.to_owned(),
        observed_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        payload: Some(payload),
        ..Event::default()
    }
}

/// A generic metric event (`unit` in UCUM-like notation, "" when unknown).
pub fn metric(event_id: &str, device_id: &str, name: &str, value: f64, unit: &str) -> Event {
    event(
        event_id,
        device_id,
        Payload::Metric(Metric {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
        }),
    )
}

/// A GPU sample event; `sample.utilization` is a ratio within 0..1.
pub fn gpu(event_id: &str, device_id: &str, sample: GpuSample) -> Event {
    event(event_id, device_id, Payload::Gpu(sample))
}

/// The token usage of one inference request.
pub fn tokens(event_id: &str, device_id: &str, usage: TokenUsage) -> Event {
    event(event_id, device_id, Payload::Tokens(usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each builder sets ids, the payload and an observation time.
    #[test]
    fn builders_fill_the_event() {
        let e = metric("m-1", "dev-1", "fan_speed", 3200.0, "1");
        assert_eq!(
            (e.event_id.as_str(), e.device_id.as_str()),
            ("m-1", "dev-1")
        );
        assert!(e.observed_at.is_some());
        assert_eq!(
            e.payload,
            Some(Payload::Metric(Metric {
                name: "fan_speed".to_owned(),
                value: 3200.0,
                unit: "1".to_owned()
            }))
        );
        let g = gpu(
            "g-1",
            "dev-1",
            GpuSample {
                utilization: 0.5,
                ..GpuSample::default()
            },
        );
        assert!(matches!(g.payload, Some(Payload::Gpu(s)) if s.utilization == 0.5));
    }
}
