//! The simulated fleet: devices with labels and per-device baselines, and
//! the events they emit, reproducible from a seed.

use std::time::{Duration, SystemTime};

use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
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

/// A generated payload, its texts borrowed from the constants above, so
/// that encoding one ([`Fleet::next_event_into`]) allocates nothing.
#[derive(Debug, Clone, Copy)]
enum Sample {
    Gpu(GpuSample),
    Tokens {
        model: &'static str,
        tenant: &'static str,
        prompt_tokens: u64,
        completion_tokens: u64,
        latency: Option<prost_types::Duration>,
    },
    Metric {
        name: &'static str,
        value: f64,
        unit: &'static str,
    },
}

impl Sample {
    fn kind(&self) -> Kind {
        match self {
            Self::Gpu(_) => Kind::Gpu,
            Self::Tokens { .. } => Kind::Tokens,
            Self::Metric { .. } => Kind::Metric,
        }
    }

    fn to_payload(self) -> Payload {
        match self {
            Self::Gpu(gpu) => Payload::Gpu(gpu),
            Self::Tokens {
                model,
                tenant,
                prompt_tokens,
                completion_tokens,
                latency,
            } => Payload::Tokens(TokenUsage {
                model: model.to_owned(),
                tenant: tenant.to_owned(),
                prompt_tokens,
                completion_tokens,
                latency,
            }),
            Self::Metric { name, value, unit } => Payload::Metric(Metric {
                name: name.to_owned(),
                value,
                unit: unit.to_owned(),
            }),
        }
    }

    /// Appends the payload as `Event` encodes its `payload` oneof (fields
    /// 10-12), byte for byte: prost's order and its omission of defaults.
    fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Self::Gpu(gpu) => nested(10, buf, |buf| {
                uint(1, u64::from(gpu.gpu_index), buf);
                double(2, gpu.utilization, buf);
                uint(3, gpu.memory_used_bytes, buf);
                uint(4, gpu.memory_total_bytes, buf);
                double(5, gpu.temperature_celsius, buf);
                double(6, gpu.power_watts, buf);
            }),
            Self::Tokens {
                model,
                tenant,
                prompt_tokens,
                completion_tokens,
                latency,
            } => nested(11, buf, |buf| {
                text(1, model, buf);
                text(2, tenant, buf);
                uint(3, *prompt_tokens, buf);
                uint(4, *completion_tokens, buf);
                if let Some(latency) = latency {
                    nested(5, buf, |buf| {
                        uint(1, latency.seconds as u64, buf);
                        uint(2, i64::from(latency.nanos) as u64, buf);
                    });
                }
            }),
            Self::Metric { name, value, unit } => nested(12, buf, |buf| {
                text(1, name, buf);
                double(2, *value, buf);
                text(3, unit, buf);
            }),
        }
    }
}

/// A varint field (uint32, uint64, int64 and int32 alike: negative ones
/// as their 64-bit two's complement, as protobuf has it), unless 0.
fn uint(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

/// A double field, unless 0.
fn double(tag: u32, value: f64, buf: &mut Vec<u8>) {
    if value != 0.0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// A string field, unless empty.
fn text(tag: u32, value: &str, buf: &mut Vec<u8>) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value.as_bytes());
    }
}

/// A message field written by `body`: its length goes first, so one byte
/// is set aside for it and widened afterwards in the rare case it needs
/// more (a message of 128 bytes or over).
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
                let labels_wire = Event {
                    labels: labels.iter().cloned().collect(),
                    ..Event::default()
                }
                .encode_to_vec();
                let id = format!("{prefix}-{i:05}");
                let mut id_wire = Vec::new();
                text(2, &id, &mut id_wire);
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
        text(5, run_id, &mut run_id_wire);
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
            payload: Some(sample.to_payload()),
        };
        (event, sample.kind())
    }

    /// [`Self::next_event`], encoded at the end of `buf`: the same event
    /// on the wire, as prost encodes it but with the labels last. Written
    /// field by field from parts encoded once (the device's id and labels,
    /// the run id, the batch's `observed_at`), without building an `Event`
    /// (a dozen allocations) or encoding one through prost: this is the
    /// simulator's hot path (`sim/generate` in `bench/benches`).
    pub fn next_event_into(&mut self, observed_at: SystemTime, buf: &mut Vec<u8>) -> Kind {
        let (n, index, sample) = self.generate();
        let mut digits = itoa::Buffer::new();
        let n = digits.format(n);
        encode_key(1, WireType::LengthDelimited, buf);
        encode_varint((self.run_id.len() + 1 + n.len()) as u64, buf);
        buf.extend_from_slice(self.run_id.as_bytes());
        buf.push(b'-');
        buf.extend_from_slice(n.as_bytes());
        let device = self.devices.get(index);
        if let Some(device) = device {
            buf.extend_from_slice(&device.id_wire);
        }
        match &self.observed_wire {
            Some((at, wire)) if *at == observed_at => buf.extend_from_slice(wire),
            _ => {
                let ts = prost_types::Timestamp::from(observed_at);
                let mut wire = Vec::with_capacity(16);
                nested(3, &mut wire, |wire| {
                    uint(1, ts.seconds as u64, wire);
                    uint(2, i64::from(ts.nanos) as u64, wire);
                });
                buf.extend_from_slice(&wire);
                self.observed_wire = Some((observed_at, wire));
            }
        }
        buf.extend_from_slice(&self.run_id_wire);
        sample.encode(buf);
        if let Some(device) = device {
            buf.extend_from_slice(&device.labels_wire);
        }
        sample.kind()
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
                Sample::Gpu(GpuSample {
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
                Sample::Tokens {
                    model: MODELS[rng.random_range(0..MODELS.len())],
                    tenant: TENANTS[rng.random_range(0..TENANTS.len())],
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    latency: prost_types::Duration::try_from(latency).ok(),
                }
            }
            _ => {
                let (name, unit) = METRICS[rng.random_range(0..METRICS.len())];
                Sample::Metric {
                    name,
                    value: rng.random_range(0.0..100.0),
                    unit,
                }
            }
        };
        (n, index, sample)
    }
}

#[cfg(test)]
mod tests {
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

    /// A payload of 128 bytes or more gets its length widened in place.
    #[test]
    fn long_payloads_are_encoded_as_prost_does() {
        for len in [100, 127, 128, 200, 20_000] {
            let name: &'static str = Box::leak("m".repeat(len).into_boxed_str());
            let sample = Sample::Metric {
                name,
                value: 1.5,
                unit: "By",
            };
            let mut ours = vec![7];
            sample.encode(&mut ours);
            let mut prost = vec![7];
            sample.to_payload().encode(&mut prost);
            assert_eq!(ours, prost, "name of {len}");
        }
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
