//! Exemplars (trace ids) on histograms, for the Prometheus pull endpoint.
//!
//! opentelemetry_sdk 0.33 records no exemplars (open-telemetry/opentelemetry-rust#3369),
//! and the classic Prometheus text format could not carry them anyway.
//! [`ExemplarHistogram`] records into an OpenTelemetry histogram as usual
//! and also keeps, per label set and bucket, the latest observation made
//! inside a *sampled* span: its trace id, span id, value and time. `/metrics`
//! adds them to the `_bucket` lines when the scraper negotiates OpenMetrics
//! (see [`crate::serve_metrics`]); OTLP-pushed histograms carry none.
//!
//! Cost on the recording path: without a current span, one thread-local
//! lookup; inside one, its context is read and a mutex is taken for a hash
//! lookup. Nothing is allocated except for the first exemplar of a new label
//! set, and label sets are capped at [`MAX_LABEL_SETS`] per histogram.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Label sets kept per histogram; exemplars of further label sets are
/// dropped (the observations themselves are still recorded).
pub const MAX_LABEL_SETS: usize = 1024;

/// One observation made inside a sampled span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Exemplar {
    /// The span's trace.
    pub(crate) trace_id: TraceId,
    /// The span.
    pub(crate) span_id: SpanId,
    /// The observed value.
    pub(crate) value: f64,
    /// When it was observed.
    pub(crate) timestamp: SystemTime,
}

/// A histogram that also keeps exemplars for `/metrics`.
#[derive(Debug, Clone)]
pub struct ExemplarHistogram {
    histogram: Histogram<f64>,
    store: Arc<Store>,
}

impl ExemplarHistogram {
    /// A histogram of `name` in seconds (unit `s`, so exported to
    /// Prometheus as `<name>_seconds`) with explicit bucket `boundaries`,
    /// whose exemplars are served by `/metrics`.
    pub fn seconds(
        meter: &Meter,
        name: &'static str,
        description: &'static str,
        boundaries: &[f64],
    ) -> Self {
        Self::seconds_in(Exemplars::global(), meter, name, description, boundaries)
    }

    /// [`ExemplarHistogram::seconds`] keeping its exemplars in `exemplars`.
    pub(crate) fn seconds_in(
        exemplars: &Exemplars,
        meter: &Meter,
        name: &'static str,
        description: &'static str,
        boundaries: &[f64],
    ) -> Self {
        let histogram = meter
            .f64_histogram(name)
            .with_unit("s")
            .with_description(description)
            .with_boundaries(boundaries.to_vec())
            .build();
        let store = exemplars.store(prometheus_name(name, "seconds"), boundaries);
        Self { histogram, store }
    }

    /// Records `value` with `attributes`, and keeps it as the exemplar of
    /// its bucket when the current span is sampled.
    pub fn record(&self, value: f64, attributes: &[KeyValue]) {
        self.histogram.record(value, attributes);
        if let Some((trace_id, span_id)) = sampled_span() {
            self.store.offer(
                attributes,
                Exemplar {
                    trace_id,
                    span_id,
                    value,
                    timestamp: SystemTime::now(),
                },
            );
        }
    }

    /// The Prometheus family name the histogram is exported under.
    pub fn prometheus_name(&self) -> &str {
        &self.store.name
    }
}

/// The trace and span id of the current span, if it is sampled.
fn sampled_span() -> Option<(TraceId, SpanId)> {
    let span = tracing::Span::current();
    // No current span: skip the context lookup altogether.
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let span = cx.span();
    let sc = span.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| (sc.trace_id(), sc.span_id()))
}

/// The name opentelemetry-prometheus gives an instrument: invalid
/// characters become `_`, then `_<unit>` is appended.
fn prometheus_name(name: &str, unit_suffix: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out.push('_');
    out.push_str(unit_suffix);
    out
}

/// The exemplars of one histogram (shared by every instance of the same
/// name, as the SDK shares the instrument).
#[derive(Debug)]
struct Store {
    name: String,
    boundaries: Box<[f64]>,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    /// By an order-independent hash of the attributes.
    by_hash: HashMap<u64, Vec<Series>>,
    len: usize,
}

#[derive(Debug)]
struct Series {
    attributes: Box<[KeyValue]>,
    /// One slot per bucket, the last for `+Inf`.
    buckets: Box<[Option<Exemplar>]>,
}

impl Series {
    fn matches(&self, attributes: &[KeyValue]) -> bool {
        self.attributes.len() == attributes.len()
            && attributes.iter().all(|kv| self.attributes.contains(kv))
    }
}

/// The same for any order of the same attributes, as the SDK's series.
fn attributes_hash(attributes: &[KeyValue]) -> u64 {
    attributes.iter().fold(0u64, |sum, kv| {
        let mut hasher = std::hash::DefaultHasher::new();
        kv.hash(&mut hasher);
        sum.wrapping_add(hasher.finish())
    })
}

impl Store {
    fn offer(&self, attributes: &[KeyValue], exemplar: Exemplar) {
        if exemplar.value.is_nan() {
            return;
        }
        // The lowest bucket whose upper bound is >= the value, as Prometheus' `le`.
        let bucket = self.boundaries.partition_point(|b| *b < exemplar.value);
        let hash = attributes_hash(attributes);
        let Ok(mut table) = self.table.lock() else {
            return;
        };
        if let Some(series) = table
            .by_hash
            .get_mut(&hash)
            .and_then(|list| list.iter_mut().find(|s| s.matches(attributes)))
        {
            series.buckets[bucket] = Some(exemplar);
            return;
        }
        if table.len >= MAX_LABEL_SETS {
            return;
        }
        let mut buckets = vec![None; self.boundaries.len() + 1].into_boxed_slice();
        buckets[bucket] = Some(exemplar);
        table.by_hash.entry(hash).or_default().push(Series {
            attributes: attributes.into(),
            buckets,
        });
        table.len += 1;
    }

    fn snapshot(&self) -> FamilyExemplars {
        let mut family = FamilyExemplars::default();
        let Ok(table) = self.table.lock() else {
            return family;
        };
        for series in table.by_hash.values().flatten() {
            let labels = prometheus_labels(&series.attributes);
            family
                .label_names
                .extend(labels.iter().map(|(name, _)| name.clone()));
            family
                .by_labels
                .insert(labels, series.buckets.iter().flatten().copied().collect());
        }
        family
    }
}

/// Attributes as opentelemetry-prometheus turns them into labels: keys
/// sanitised, values of keys that collide after sanitising joined with `;`
/// in the order of the original keys; sorted by label name.
fn prometheus_labels(attributes: &[KeyValue]) -> Vec<(String, String)> {
    let mut by_name: BTreeMap<String, Vec<(&str, String)>> = BTreeMap::new();
    for kv in attributes {
        let name: String = kv
            .key
            .as_str()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == ':' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        by_name
            .entry(name)
            .or_default()
            .push((kv.key.as_str(), kv.value.to_string()));
    }
    by_name
        .into_iter()
        .map(|(name, mut values)| {
            values.sort_by(|a, b| a.0.cmp(b.0));
            let joined: Vec<String> = values.into_iter().map(|(_, v)| v).collect();
            (name, joined.join(";"))
        })
        .collect()
}

/// The exemplars of one Prometheus histogram family, ready to render.
#[derive(Debug, Default)]
pub(crate) struct FamilyExemplars {
    /// Every label name the exemplars were recorded with; the resource
    /// labels the exporter adds to each series are not among them.
    label_names: std::collections::BTreeSet<String>,
    by_labels: HashMap<Vec<(String, String)>, Vec<Exemplar>>,
}

impl FamilyExemplars {
    /// The exemplars of the series with these labels (`le` and the labels
    /// the exporter adds are ignored).
    pub(crate) fn for_series<'a>(
        &self,
        labels: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> &[Exemplar] {
        let mut key: Vec<(String, String)> = labels
            .filter(|(name, _)| self.label_names.contains(*name))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        key.sort();
        self.by_labels.get(&key).map_or(&[], Vec::as_slice)
    }
}

/// Exemplars of every [`ExemplarHistogram`], by Prometheus family name.
pub(crate) type Snapshot = HashMap<String, FamilyExemplars>;

/// Where [`ExemplarHistogram`]s keep their exemplars: one per process
/// ([`Exemplars::global`]), read by `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Exemplars {
    stores: Mutex<Vec<Arc<Store>>>,
}

impl Exemplars {
    /// The process-wide set, as the global meter provider is process-wide.
    pub(crate) fn global() -> &'static Exemplars {
        static GLOBAL: OnceLock<Exemplars> = OnceLock::new();
        GLOBAL.get_or_init(Exemplars::default)
    }

    /// The store of `name`, made on first use. Histograms of one name share
    /// it (the first one's boundaries win, as for the SDK's instrument).
    fn store(&self, name: String, boundaries: &[f64]) -> Arc<Store> {
        let mut stores = match self.stores.lock() {
            Ok(stores) => stores,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(store) = stores.iter().find(|s| s.name == name) {
            return store.clone();
        }
        let store = Arc::new(Store {
            name,
            boundaries: boundaries.into(),
            table: Mutex::default(),
        });
        stores.push(store.clone());
        store
    }

    /// A copy of every exemplar, by family name.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let Ok(stores) = self.stores.lock() else {
            return Snapshot::default();
        };
        stores
            .iter()
            .map(|s| (s.name.clone(), s.snapshot()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    const BOUNDS: [f64; 3] = [0.1, 1.0, 10.0];

    /// Runs `f` with a subscriber bridging spans to an SDK tracer with `sampler`.
    fn with_tracer(sampler: Sampler, f: impl FnOnce()) {
        let provider = SdkTracerProvider::builder().with_sampler(sampler).build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
    }

    fn histogram(exemplars: &Exemplars) -> ExemplarHistogram {
        let meter = opentelemetry_sdk::metrics::SdkMeterProvider::default();
        use opentelemetry::metrics::MeterProvider as _;
        ExemplarHistogram::seconds_in(
            exemplars,
            &meter.meter("test"),
            "test.latency",
            "test",
            &BOUNDS,
        )
    }

    fn kv(method: &'static str) -> [KeyValue; 2] {
        [
            KeyValue::new("rpc.method", method),
            KeyValue::new("rpc.grpc.status_code", 0),
        ]
    }

    /// The family name follows the exporter's rules: dots to `_`, unit suffix.
    #[test]
    fn names_follow_the_exporter() {
        let exemplars = Exemplars::default();
        assert_eq!(
            histogram(&exemplars).prometheus_name(),
            "test_latency_seconds"
        );
        assert_eq!(prometheus_name("9.lives", "seconds"), "_9_lives_seconds");
    }

    /// Outside any span, and inside an unsampled one, nothing is kept.
    #[test]
    fn no_exemplar_without_a_sampled_span() {
        let exemplars = Exemplars::default();
        let h = histogram(&exemplars);
        h.record(0.5, &kv("Publish"));
        with_tracer(Sampler::AlwaysOff, || {
            let span = tracing::info_span!("unsampled");
            span.in_scope(|| h.record(0.5, &kv("Publish")));
        });
        let snapshot = exemplars.snapshot();
        let family = &snapshot["test_latency_seconds"];
        assert!(family.by_labels.is_empty(), "{family:?}");
    }

    /// Inside a sampled span the exemplar carries that span's ids and lands
    /// in the lowest bucket whose bound is >= the value; later values replace
    /// earlier ones per bucket; attribute order does not split series.
    #[test]
    fn sampled_span_gives_an_exemplar_in_its_bucket() {
        let exemplars = Exemplars::default();
        let h = histogram(&exemplars);
        let mut ids = Vec::new();
        with_tracer(Sampler::AlwaysOn, || {
            for value in [0.5, 1.0, 0.7, 50.0] {
                let span = tracing::info_span!("sampled");
                span.in_scope(|| {
                    let cx = tracing::Span::current().context();
                    let sc = cx.span().span_context().clone();
                    ids.push((sc.trace_id(), sc.span_id()));
                    let [a, b] = kv("Publish");
                    // Reversed on purpose: the same series as [a, b].
                    let attrs = if value == 0.7 { [b, a] } else { [a, b] };
                    h.record(value, &attrs);
                });
            }
        });
        let snapshot = exemplars.snapshot();
        let family = &snapshot["test_latency_seconds"];
        assert_eq!(family.by_labels.len(), 1, "{family:?}");
        let got = family.for_series(
            [
                ("rpc_method", "Publish"),
                ("le", "1"),
                ("service_name", "testbed"),
                ("rpc_grpc_status_code", "0"),
            ]
            .into_iter(),
        );
        let mut got: Vec<(f64, TraceId, SpanId)> = got
            .iter()
            .map(|e| (e.value, e.trace_id, e.span_id))
            .collect();
        got.sort_by(|a, b| a.0.total_cmp(&b.0));
        // 0.5 was replaced by 0.7 (same bucket, le=1); 1.0 is in le=1 too
        // and was replaced; 50 is in +Inf.
        assert_eq!(
            got,
            vec![(0.7, ids[2].0, ids[2].1), (50.0, ids[3].0, ids[3].1)]
        );
        assert_ne!(ids[2].0, TraceId::INVALID);
    }

    /// Past the cap, new label sets are dropped; known ones still update.
    #[test]
    fn label_sets_are_capped() {
        let exemplars = Exemplars::default();
        let h = histogram(&exemplars);
        with_tracer(Sampler::AlwaysOn, || {
            let span = tracing::info_span!("sampled");
            span.in_scope(|| {
                for i in 0..(MAX_LABEL_SETS as i64 + 10) {
                    h.record(0.05, &[KeyValue::new("i", i)]);
                }
                h.record(5.0, &[KeyValue::new("i", 0)]);
            });
        });
        let snapshot = exemplars.snapshot();
        let family = &snapshot["test_latency_seconds"];
        assert_eq!(family.by_labels.len(), MAX_LABEL_SETS);
        assert_eq!(family.for_series([("i", "0")].into_iter()).len(), 2);
        assert!(family.for_series([("i", "1030")].into_iter()).is_empty());
    }

    /// Through the real exporter: the family opentelemetry-prometheus makes
    /// has the wrapper's name, and its bucket line (with the exporter's
    /// resource and scope labels added) gets the span's exemplar.
    #[test]
    fn exporter_family_gets_the_exemplar() {
        use opentelemetry::metrics::MeterProvider as _;
        let registry = prometheus::Registry::new();
        let reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .unwrap();
        let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_resource(
                opentelemetry_sdk::Resource::builder_empty()
                    .with_attribute(KeyValue::new("service.name", "testbed"))
                    .build(),
            )
            .with_reader(reader)
            .build();
        let exemplars = Exemplars::default();
        let h = ExemplarHistogram::seconds_in(
            &exemplars,
            &provider.meter("test"),
            "rpc.server.duration",
            "RPC",
            &BOUNDS,
        );
        let mut trace_id = TraceId::INVALID;
        with_tracer(Sampler::AlwaysOn, || {
            tracing::info_span!("call").in_scope(|| {
                trace_id = tracing::Span::current()
                    .context()
                    .span()
                    .span_context()
                    .trace_id();
                h.record(0.05, &kv("Publish"));
            });
        });
        h.record(0.05, &kv("Other"));
        let families = registry.gather();
        assert!(
            families.iter().any(|f| f.name() == h.prometheus_name()),
            "{:?}",
            families.iter().map(|f| f.name()).collect::<Vec<_>>()
        );
        let text = crate::openmetrics::render(&families, &exemplars.snapshot());
        let with: Vec<&str> = text.lines().filter(|l| l.contains(" # {")).collect();
        assert_eq!(with.len(), 1, "{text}");
        assert!(
            with[0].starts_with("rpc_server_duration_seconds_bucket{")
                && with[0].contains("rpc_method=\"Publish\"")
                && with[0].contains("le=\"0.1\"}")
                && with[0].contains(&format!("{{trace_id=\"{trace_id}\",span_id=\"")),
            "{text}"
        );
    }

    /// Keys that collide after sanitising are joined like the exporter does.
    #[test]
    fn labels_match_the_exporter() {
        assert_eq!(
            prometheus_labels(&[
                KeyValue::new("b.x", "2"),
                KeyValue::new("b_x", "1"),
                KeyValue::new("a", 7),
            ]),
            vec![
                ("a".to_owned(), "7".to_owned()),
                ("b_x".to_owned(), "2;1".to_owned())
            ]
        );
    }
}

/// Snapshots built by hand, for the renderer's tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A snapshot holding `exemplars` for the series of `family` with `labels`.
    pub(crate) fn snapshot(
        family: &str,
        labels: &[(&str, &str)],
        exemplars: Vec<Exemplar>,
    ) -> Snapshot {
        let mut f = FamilyExemplars::default();
        let mut key: Vec<(String, String)> = labels
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        key.sort();
        f.label_names.extend(key.iter().map(|(n, _)| n.clone()));
        f.by_labels.insert(key, exemplars);
        Snapshot::from([(family.to_owned(), f)])
    }
}
