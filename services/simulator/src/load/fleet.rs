//! The simulated fleet: devices with labels and per-device baselines, and
//! the events they emit, reproducible from a seed.

use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use testbed_proto::raw::event_writer;
use testbed_proto::raw::{MetricRef, PayloadRef, TokenUsageRef};
use testbed_proto::v1::{Event, GpuSample, Metric, TokenUsage, event::Payload};

/// Models served by the simulated inference fleet.
const MODELS: [&str; 3] = ["llama-3-8b", "mistral-7b", "qwen2-72b"];
/// Tenants of the simulated inference fleet.
const TENANTS: [&str; 5] = ["team-a", "team-b", "team-c", "team-d", "team-e"];
/// Generic metrics.
const METRICS: [(&str, &str); 3] = [("fan_speed", "1"), ("cpu_temp", "Cel"), ("mem_used", "By")];
/// GPU memory of every simulated GPU (16 GiB).
const GPU_MEMORY: u64 = 16 << 30;

/// Weights of the payload kinds (`--mix gpu=0.5,tokens=0.3,metric=0.2`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// GPU samples.
    pub gpu: f64,
    /// Token usage records.
    pub tokens: f64,
    /// Generic metrics.
    pub metric: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            gpu: 0.5,
            tokens: 0.3,
            metric: 0.2,
        }
    }
}

/// Parses `name=weight,...` pairs into weights for `names` (missing = 0).
pub fn parse_weights(text: &str, names: &[&str]) -> Result<Vec<f64>, String> {
    let mut weights = vec![0.0; names.len()];
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("expected name=weight, got {pair:?}"))?;
        let i = names
            .iter()
            .position(|n| *n == name.trim())
            .ok_or_else(|| {
                format!(
                    "unknown name {name:?}; expected one of {}",
                    names.join(", ")
                )
            })?;
        let w: f64 = value
            .trim()
            .parse()
            .map_err(|_| format!("weight of {name} is not a number"))?;
        if !(w.is_finite() && w >= 0.0) {
            return Err(format!("weight of {name} must be non-negative"));
        }
        weights[i] = w;
    }
    if weights.iter().sum::<f64>() <= 0.0 {
        return Err("weights must not all be zero".to_owned());
    }
    Ok(weights)
}

fn pick(weights: &[f64], rng: &mut impl Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// One simulated device.
#[derive(Debug, Clone)]
pub struct Device {
    /// `<prefix>-<index:05>`.
    pub id: String,
    /// node, arch, zone.
    pub labels: Vec<(String, String)>,
    /// The event's `device_id` field, encoded.
    id_wire: Vec<u8>,
    /// The labels as an `Event`'s encoded `labels` field, appended to each
    /// encoded event ([`Fleet::next_event_into`]) instead of a map per event.
    labels_wire: Vec<u8>,
    util: f64,
    temp: f64,
    power: f64,
}

/// Devices and the generator of their events.
#[derive(Debug)]
pub struct Fleet {
    /// The devices.
    pub devices: Vec<Device>,
    mix: [f64; 3],
    rng: StdRng,
    run_id: String,
    /// The event's `run_id` field, encoded.
    run_id_wire: Vec<u8>,
    /// The last `observed_at` encoded, and its encoding: a batch's events
    /// share it.
    observed_wire: Option<(SystemTime, Vec<u8>)>,
    next: u64,
}

/// A generated payload: the form the event writer takes, its texts
/// borrowed from the constants above, so that encoding one
/// ([`Fleet::next_event_into`]) allocates nothing.
type Sample = PayloadRef<'static>;

/// The generated message of a payload, for [`Fleet::next_event`].
fn to_payload(sample: Sample) -> Payload {
    // The texts are the constants above: always UTF-8, never replaced.
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match sample {
        PayloadRef::Gpu(gpu) => Payload::Gpu(gpu),
        PayloadRef::Tokens(t) => Payload::Tokens(TokenUsage {
            model: text(t.model),
            tenant: text(t.tenant),
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            latency: t.latency,
        }),
        PayloadRef::Metric(m) => Payload::Metric(Metric {
            name: text(m.name),
            value: m.value,
            unit: text(m.unit),
        }),
    }
}

/// The payload kinds a generated event can have, in `Mix` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// GPU sample.
    Gpu,
    /// Token usage.
    Tokens,
    /// Metric.
    Metric,
}

impl Kind {
    /// The kind of a generated payload.
    fn of(sample: &Sample) -> Self {
        match sample {
            PayloadRef::Gpu(_) => Self::Gpu,
            PayloadRef::Tokens(_) => Self::Tokens,
            PayloadRef::Metric(_) => Self::Metric,
        }
    }
}

impl Fleet {
    /// A fleet of `devices` named `<prefix>-00000`…, archs drawn from
    /// `arch_mix` (names and weights), all from `seed`.
    pub fn new(
        devices: u32,
        prefix: &str,
        arch_mix: &[(String, f64)],
        mix: Mix,
        seed: u64,
        run_id: &str,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let arch_weights: Vec<f64> = arch_mix.iter().map(|(_, w)| *w).collect();
        let devices = (0..devices)
            .map(|i| {
                let arch = arch_mix
                    .get(pick(&arch_weights, &mut rng))
                    .map_or("amd64", |(a, _)| a.as_str());
                let labels = vec![
                    ("node".to_owned(), format!("node-{:03}", i / 4)),
                    ("arch".to_owned(), arch.to_owned()),
                    (
                        "zone".to_owned(),
                        format!("zone-{}", ["a", "b", "c"][(i % 3) as usize]),
                    ),
                ];
                let mut labels_wire = Vec::new();
                for (key, value) in &labels {
                    event_writer::label(key, value, &mut labels_wire);
                }
                let id = format!("{prefix}-{i:05}");
                let mut id_wire = Vec::new();
                event_writer::device_id(&id, &mut id_wire);
                Device {
                    id,
                    labels,
                    id_wire,
                    labels_wire,
                    util: rng.random_range(0.2..0.9),
                    temp: rng.random_range(45.0..75.0),
                    power: rng.random_range(120.0..350.0),
                }
            })
            .collect();
        let mut run_id_wire = Vec::new();
        event_writer::run_id(run_id, &mut run_id_wire);
        Self {
            devices,
            mix: [mix.gpu, mix.tokens, mix.metric],
            rng,
            run_id: run_id.to_owned(),
            run_id_wire,
            observed_wire: None,
            next: 0,
        }
    }

    /// The next event: round-robin over devices, kind by the mix, values
    /// around the device's baseline. Event ids are `<run_id>-<n>`, unique
    /// within the run.
    pub fn next_event(&mut self, observed_at: SystemTime) -> (Event, Kind) {
        let (n, index, sample) = self.generate();
        let device = self.devices.get(index);
        let event = Event {
            event_id: format!("{}-{n}", self.run_id),
            device_id: device.map(|d| d.id.clone()).unwrap_or_default(),
            observed_at: Some(observed_at.into()),
            labels: device
                .map(|d| d.labels.iter().cloned().collect())
                .unwrap_or_default(),
            run_id: self.run_id.clone(),
            payload: Some(to_payload(sample)),
        };
        (event, Kind::of(&sample))
    }

    /// [`Self::next_event`], encoded at the end of `buf`: the same event
    /// on the wire, as prost encodes it but with the labels last. Written
    /// field by field ([`event_writer`]) from parts encoded once (the
    /// device's id and labels, the run id, the batch's `observed_at`),
    /// without building an `Event` (a dozen allocations) or encoding one
    /// through prost: this is the simulator's hot path (`sim/generate` in
    /// `bench/benches`).
    pub fn next_event_into(&mut self, observed_at: SystemTime, buf: &mut Vec<u8>) -> Kind {
        let (n, index, sample) = self.generate();
        let mut digits = itoa::Buffer::new();
        let n = digits.format(n);
        event_writer::event_id(&[self.run_id.as_bytes(), b"-", n.as_bytes()], buf);
        let device = self.devices.get(index);
        if let Some(device) = device {
            buf.extend_from_slice(&device.id_wire);
        }
        match &self.observed_wire {
            Some((at, wire)) if *at == observed_at => buf.extend_from_slice(wire),
            _ => {
                let mut wire = Vec::with_capacity(16);
                event_writer::observed_at(&observed_at.into(), &mut wire);
                buf.extend_from_slice(&wire);
                self.observed_wire = Some((observed_at, wire));
            }
        }
        buf.extend_from_slice(&self.run_id_wire);
        event_writer::payload(&sample, buf);
        if let Some(device) = device {
            buf.extend_from_slice(&device.labels_wire);
        }
        Kind::of(&sample)
    }

    /// The next event's number, device index and payload.
    fn generate(&mut self) -> (u64, usize, Sample) {
        let n = self.next;
        self.next += 1;
        let rng = &mut self.rng;
        let index = (n % self.devices.len().max(1) as u64) as usize;
        let device = &self.devices[index];
        let sample = match pick(&self.mix, rng) {
            0 => {
                let util = (device.util + rng.random_range(-0.1..0.1)).clamp(0.0, 1.0);
                PayloadRef::Gpu(GpuSample {
                    gpu_index: rng.random_range(0..4),
                    utilization: util,
                    memory_used_bytes: (GPU_MEMORY as f64 * util * 0.9) as u64,
                    memory_total_bytes: GPU_MEMORY,
                    temperature_celsius: device.temp + util * 10.0 + rng.random_range(-2.0..2.0),
                    power_watts: device.power * (0.5 + util / 2.0),
                })
            }
            1 => {
                // Heavy-tailed token counts (Pareto, alpha 1.5), latency
                // roughly proportional to the tokens generated.
                let pareto = |rng: &mut StdRng, scale: f64| {
                    scale / rng.random_range(0.001f64..1.0).powf(1.0 / 1.5)
                };
                let prompt = pareto(rng, 200.0).min(128_000.0) as u64;
                let completion = pareto(rng, 80.0).min(8_000.0) as u64;
                let latency = Duration::from_secs_f64(
                    0.05 + completion as f64 * 0.015 * rng.random_range(0.8..1.2),
                );
                PayloadRef::Tokens(TokenUsageRef {
                    model: MODELS[rng.random_range(0..MODELS.len())].as_bytes(),
                    tenant: TENANTS[rng.random_range(0..TENANTS.len())].as_bytes(),
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    latency: prost_types::Duration::try_from(latency).ok(),
                })
            }
            _ => {
                let (name, unit) = METRICS[rng.random_range(0..METRICS.len())];
                PayloadRef::Metric(MetricRef {
                    name: name.as_bytes(),
                    value: rng.random_range(0.0..100.0),
                    unit: unit.as_bytes(),
                })
            }
        };
        (n, index, sample)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn archs() -> Vec<(String, f64)> {
        vec![
            ("amd64".into(), 0.5),
            ("arm64".into(), 0.3),
            ("armv7".into(), 0.2),
        ]
    }

    /// The same seed gives the same fleet and the same events.
    #[test]
    fn seeded_runs_repeat() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut a = Fleet::new(10, "sim", &archs(), Mix::default(), 7, "r");
        let mut b = Fleet::new(10, "sim", &archs(), Mix::default(), 7, "r");
        for _ in 0..50 {
            assert_eq!(a.next_event(t), b.next_event(t));
        }
        let mut c = Fleet::new(10, "sim", &archs(), Mix::default(), 8, "r");
        let differs = (0..50).any(|_| a.next_event(t).0.payload != c.next_event(t).0.payload);
        assert!(differs);
    }

    /// Ids, names and the kind mix follow the configuration.
    #[test]
    fn ids_names_and_mix() {
        let t = SystemTime::now();
        let mut f = Fleet::new(
            3,
            "gpu",
            &archs(),
            Mix {
                gpu: 1.0,
                tokens: 0.0,
                metric: 0.0,
            },
            1,
            "run9",
        );
        let (e0, k0) = f.next_event(t);
        let (e3, _) = (1..4).map(|_| f.next_event(t)).last().unwrap();
        assert_eq!(
            (e0.event_id.as_str(), e0.device_id.as_str(), k0),
            ("run9-0", "gpu-00000", Kind::Gpu)
        );
        assert_eq!(e3.device_id, "gpu-00000");
        assert_eq!(e0.labels.get("node").map(String::as_str), Some("node-000"));
        assert!(e0.labels.contains_key("arch") && e0.labels.contains_key("zone"));
    }

    /// Weights parse by name and refuse nonsense.
    #[test]
    fn weights() {
        assert_eq!(
            parse_weights("gpu=1,metric=3", &["gpu", "tokens", "metric"]).unwrap(),
            vec![1.0, 0.0, 3.0]
        );
        assert!(parse_weights("gpu=x", &["gpu"]).is_err());
        assert!(parse_weights("cpu=1", &["gpu"]).is_err());
        assert!(parse_weights("gpu=0", &["gpu"]).is_err());
        assert!(parse_weights("gpu=-1", &["gpu"]).is_err());
    }

    /// An event encoded by `next_event_into` decodes to the one
    /// `next_event` makes from the same seed and is, up to its labels
    /// (last), byte for byte prost's encoding of it, for every payload kind, as `observed_at` changes
    /// (nanoseconds or not) and past one-byte lengths (a long run id).
    #[test]
    fn encoded_events_are_the_events() {
        let long_run = "r".repeat(200);
        for run_id in ["run", long_run.as_str()] {
            let mut a = Fleet::new(5, "d", &archs(), Mix::default(), 7, run_id);
            let mut b = Fleet::new(5, "d", &archs(), Mix::default(), 7, run_id);
            let mut kinds = Vec::new();
            for i in 0..300u64 {
                let t = SystemTime::UNIX_EPOCH
                    + Duration::from_secs(1_700_000_000 + i / 100)
                    + Duration::from_nanos((i / 50) % 2 * 123_456_789);
                let (mut event, kind) = a.next_event(t);
                let mut buf = Vec::new();
                let encoded_kind = b.next_event_into(t, &mut buf);
                assert_eq!(Event::decode(buf.as_slice()).unwrap(), event, "event {i}");
                assert_eq!(encoded_kind, kind);
                // Labels are a map, its order a map's: compared decoded.
                event.labels.clear();
                let unlabelled = event.encode_to_vec();
                assert_eq!(&buf[..unlabelled.len()], unlabelled, "event {i}");
                kinds.push(kind);
            }
            for kind in [Kind::Gpu, Kind::Tokens, Kind::Metric] {
                assert!(kinds.contains(&kind), "{kind:?} never generated");
            }
        }
    }
}
