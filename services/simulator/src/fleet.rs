//! The simulated fleet: devices with labels and per-device baselines, and
//! the events they emit, reproducible from a seed.

use std::time::{Duration, SystemTime};

use prost::Message as _;
use prost::bytes::BytesMut;
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
    next: u64,
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
                Device {
                    id: format!("{prefix}-{i:05}"),
                    labels,
                    labels_wire,
                    util: rng.random_range(0.2..0.9),
                    temp: rng.random_range(45.0..75.0),
                    power: rng.random_range(120.0..350.0),
                }
            })
            .collect();
        Self {
            devices,
            mix: [mix.gpu, mix.tokens, mix.metric],
            rng,
            run_id: run_id.to_owned(),
            next: 0,
        }
    }

    /// The next event: round-robin over devices, kind by the mix, values
    /// around the device's baseline. Event ids are `<run_id>-<n>`, unique
    /// within the run.
    pub fn next_event(&mut self, observed_at: SystemTime) -> (Event, Kind) {
        let (mut event, device, kind) = self.generate(observed_at);
        if let Some(device) = self.devices.get(device) {
            event.labels = device.labels.iter().cloned().collect();
        }
        (event, kind)
    }

    /// [`Self::next_event`], encoded at the end of `buf`: the same event
    /// on the wire, with the device's labels spliced in already encoded.
    pub fn next_event_into(&mut self, observed_at: SystemTime, buf: &mut BytesMut) -> Kind {
        let (event, device, kind) = self.generate(observed_at);
        // Encoding into a growable buffer cannot fail.
        let _ = event.encode(buf);
        if let Some(device) = self.devices.get(device) {
            buf.extend_from_slice(&device.labels_wire);
        }
        kind
    }

    /// The next event without its labels, and its device's index.
    fn generate(&mut self, observed_at: SystemTime) -> (Event, usize, Kind) {
        let n = self.next;
        self.next += 1;
        let rng = &mut self.rng;
        let index = (n % self.devices.len().max(1) as u64) as usize;
        let device = &self.devices[index];
        let (payload, kind) = match pick(&self.mix, rng) {
            0 => {
                let util = (device.util + rng.random_range(-0.1..0.1)).clamp(0.0, 1.0);
                (
                    Payload::Gpu(GpuSample {
                        gpu_index: rng.random_range(0..4),
                        utilization: util,
                        memory_used_bytes: (GPU_MEMORY as f64 * util * 0.9) as u64,
                        memory_total_bytes: GPU_MEMORY,
                        temperature_celsius: device.temp
                            + util * 10.0
                            + rng.random_range(-2.0..2.0),
                        power_watts: device.power * (0.5 + util / 2.0),
                    }),
                    Kind::Gpu,
                )
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
                (
                    Payload::Tokens(TokenUsage {
                        model: MODELS[rng.random_range(0..MODELS.len())].to_owned(),
                        tenant: TENANTS[rng.random_range(0..TENANTS.len())].to_owned(),
                        prompt_tokens: prompt,
                        completion_tokens: completion,
                        latency: prost_types::Duration::try_from(latency).ok(),
                    }),
                    Kind::Tokens,
                )
            }
            _ => {
                let (name, unit) = METRICS[rng.random_range(0..METRICS.len())];
                (
                    Payload::Metric(Metric {
                        name: name.to_owned(),
                        value: rng.random_range(0.0..100.0),
                        unit: unit.to_owned(),
                    }),
                    Kind::Metric,
                )
            }
        };
        let event = Event {
            event_id: format!("{}-{n}", self.run_id),
            device_id: device.id.clone(),
            observed_at: Some(observed_at.into()),
            labels: std::collections::HashMap::new(),
            run_id: self.run_id.clone(),
            payload: Some(payload),
        };
        (event, index, kind)
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

    /// An event encoded by `next_event_into` decodes to the one
    /// `next_event` makes from the same seed.
    #[test]
    fn encoded_events_are_the_events() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut a = Fleet::new(5, "d", &archs(), Mix::default(), 7, "run");
        let mut b = Fleet::new(5, "d", &archs(), Mix::default(), 7, "run");
        let mut buf = BytesMut::new();
        for _ in 0..20 {
            let (event, kind) = a.next_event(t);
            let encoded_kind = b.next_event_into(t, &mut buf);
            let decoded = Event::decode(buf.split().freeze()).unwrap();
            assert_eq!((decoded, encoded_kind), (event, kind));
        }
    }
}
