//! The OpenMetrics 1.0 text rendering of gathered `prometheus` families,
//! with exemplars on histogram buckets.
//!
//! The `prometheus` crate only writes the classic text format (0.0.4), which
//! has no exemplars. This writes the same families the OpenMetrics way:
//! counter families are named without `_total` in `# TYPE`/`# HELP` and their
//! samples with it; `untyped` is `unknown`; `le` and `quantile` values use
//! the canonical number form (`1.0`, `0.005`, `+Inf`); `HELP` text and label
//! values escape `\`, `"` and newlines; one `# EOF` ends the text. No
//! `# UNIT` lines (optional in OpenMetrics).

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use prometheus::proto::{Metric, MetricFamily, MetricType};

use crate::exemplars::{Exemplar, Snapshot};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders `families` as OpenMetrics text, adding the exemplars in
/// `exemplars` (by family name) to histogram buckets.
pub fn render(families: &[MetricFamily], exemplars: &Snapshot) -> String {
    let mut out = String::new();
    for family in families {
        if family.get_metric().is_empty() {
            continue;
        }
        let name = family.name();
        let kind = family.get_field_type();
        let family_name = match kind {
            MetricType::COUNTER => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        if !family.help().is_empty() {
            let _ = writeln!(out, "# HELP {family_name} {}", escape(family.help()));
        }
        let type_name = match kind {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "unknown",
        };
        let _ = writeln!(out, "# TYPE {family_name} {type_name}");
        let family_exemplars = exemplars.get(name);
        for metric in family.get_metric() {
            let mut sample = Sample {
                out: &mut out,
                metric,
            };
            match kind {
                MetricType::COUNTER => {
                    let value = float(metric.get_counter().get_value());
                    sample.write(family_name, "_total", None, &value, None);
                }
                MetricType::GAUGE => {
                    let value = float(metric.get_gauge().get_value());
                    sample.write(family_name, "", None, &value, None);
                }
                MetricType::UNTYPED => {
                    #[allow(deprecated)] // the plain model marks untyped deprecated
                    let value = float(metric.get_untyped().get_value());
                    sample.write(family_name, "", None, &value, None);
                }
                MetricType::SUMMARY => write_summary(sample, family_name),
                MetricType::HISTOGRAM => {
                    let exemplars = family_exemplars.map_or(&[][..], |f| {
                        f.for_series(metric.get_label().iter().map(|l| (l.name(), l.value())))
                    });
                    write_histogram(sample, family_name, exemplars);
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Writes the samples of one metric (series) of a family.
struct Sample<'a> {
    out: &'a mut String,
    metric: &'a Metric,
}

impl Sample<'_> {
    /// One line: `name{labels[,extra]} value [timestamp] [# exemplar]`.
    fn write(
        &mut self,
        name: &str,
        suffix: &str,
        extra: Option<(&str, &str)>,
        value: &str,
        exemplar: Option<&Exemplar>,
    ) {
        let out = &mut *self.out;
        out.push_str(name);
        out.push_str(suffix);
        let labels = self
            .metric
            .get_label()
            .iter()
            .map(|l| (l.name(), l.value()))
            .chain(extra);
        let mut first = true;
        for (label, label_value) in labels {
            out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(out, "{label}=\"{}\"", escape(label_value));
        }
        if !first {
            out.push('}');
        }
        out.push(' ');
        out.push_str(value);
        // 0 is "unset" in the prometheus crate's model; OpenMetrics wants seconds.
        let ms = self.metric.timestamp_ms();
        if ms != 0 {
            let _ = write!(out, " {}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
        }
        if let Some(e) = exemplar {
            let at = e.timestamp.duration_since(UNIX_EPOCH).unwrap_or_default();
            let _ = write!(
                out,
                " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {}.{:03}",
                e.trace_id,
                e.span_id,
                float(e.value),
                at.as_secs(),
                at.subsec_millis()
            );
        }
        out.push('\n');
    }
}

fn write_histogram(mut sample: Sample<'_>, name: &str, exemplars: &[Exemplar]) {
    let h = sample.metric.get_histogram();
    let mut lower = f64::NEG_INFINITY;
    let mut inf_seen = false;
    let mut bucket = |sample: &mut Sample<'_>, upper: f64, count: u64| {
        // The latest exemplar within (lower, upper]: the bucket it belongs to.
        let exemplar = exemplars
            .iter()
            .filter(|e| e.value > lower && e.value <= upper)
            .max_by_key(|e| e.timestamp);
        lower = upper;
        let le = float(upper);
        sample.write(
            name,
            "_bucket",
            Some(("le", &le)),
            &count.to_string(),
            exemplar,
        );
    };
    for b in h.get_bucket() {
        inf_seen |= b.upper_bound() == f64::INFINITY;
        bucket(&mut sample, b.upper_bound(), b.cumulative_count());
    }
    if !inf_seen {
        bucket(&mut sample, f64::INFINITY, h.get_sample_count());
    }
    sample.write(name, "_sum", None, &float(h.get_sample_sum()), None);
    let count = h.get_sample_count().to_string();
    sample.write(name, "_count", None, &count, None);
}

fn write_summary(mut sample: Sample<'_>, name: &str) {
    let s = sample.metric.get_summary();
    for q in s.get_quantile() {
        let quantile = float(q.quantile());
        sample.write(
            name,
            "",
            Some(("quantile", &quantile)),
            &float(q.value()),
            None,
        );
    }
    sample.write(name, "_sum", None, &float(s.sample_sum()), None);
    let count = s.sample_count().to_string();
    sample.write(name, "_count", None, &count, None);
}

/// The canonical OpenMetrics number: Go's `%g` (shortest, exponent below
/// 1e-4 and from 1e6), with `.0` added when it would read as an integer;
/// `+Inf`, `-Inf`, `NaN`.
fn float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e6".
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let plain = v.to_string();
    if plain.contains('.') {
        plain
    } else {
        plain + ".0"
    }
}

/// Escapes `\`, `"` and newlines (HELP text and label values).
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\\', '"', '\n']) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::{Duration, SystemTime};

    use opentelemetry::trace::{SpanId, TraceId};
    use prometheus::{Counter, Gauge, Histogram, HistogramOpts, Opts, Registry};

    use super::*;

    fn registry() -> Registry {
        let registry = Registry::new();
        let counter = Counter::with_opts(
            Opts::new("jobs_done_total", "Jobs \"done\" \\ finished\nfor real")
                .const_label("path", "a\"b\\c\nd"),
        )
        .unwrap();
        counter.inc_by(3.0);
        let gauge = Gauge::new("queue_depth", "Depth").unwrap();
        gauge.set(2.5);
        let histogram = Histogram::with_opts(
            HistogramOpts::new("work_latency_seconds", "Latency")
                .const_label("service_name", "testbed")
                .buckets(vec![0.005, 1.0, 2.5]),
        )
        .unwrap();
        for v in [0.001, 0.5, 0.7, 2.0, 9.0] {
            histogram.observe(v);
        }
        registry.register(Box::new(counter)).unwrap();
        registry.register(Box::new(gauge)).unwrap();
        registry.register(Box::new(histogram)).unwrap();
        registry
    }

    fn exemplar(value: f64, secs: u64) -> Exemplar {
        Exemplar {
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            span_id: SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            value,
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + 250),
        }
    }

    /// The whole text of a small registry, exactly: counter named without
    /// `_total` in metadata and with it on the sample, escaping, canonical
    /// `le`, the +Inf bucket, and one `# EOF` at the very end.
    #[test]
    fn renders_families_the_openmetrics_way() {
        let text = render(&registry().gather(), &Snapshot::default());
        assert_eq!(
            text,
            "# HELP jobs_done Jobs \\\"done\\\" \\\\ finished\\nfor real\n\
             # TYPE jobs_done counter\n\
             jobs_done_total{path=\"a\\\"b\\\\c\\nd\"} 3.0\n\
             # HELP queue_depth Depth\n\
             # TYPE queue_depth gauge\n\
             queue_depth 2.5\n\
             # HELP work_latency_seconds Latency\n\
             # TYPE work_latency_seconds histogram\n\
             work_latency_seconds_bucket{service_name=\"testbed\",le=\"0.005\"} 1\n\
             work_latency_seconds_bucket{service_name=\"testbed\",le=\"1.0\"} 3\n\
             work_latency_seconds_bucket{service_name=\"testbed\",le=\"2.5\"} 4\n\
             work_latency_seconds_bucket{service_name=\"testbed\",le=\"+Inf\"} 5\n\
             work_latency_seconds_sum{service_name=\"testbed\"} 12.201\n\
             work_latency_seconds_count{service_name=\"testbed\"} 5\n\
             # EOF\n"
        );
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    /// An exemplar goes on the lowest bucket whose `le` is >= its value
    /// (a value equal to a bound stays in that bucket), the latest one
    /// wins within a bucket, and values past the last bound go to +Inf.
    #[test]
    fn exemplars_land_on_their_bucket() {
        let registry = registry();
        let exemplars = crate::exemplars::tests_support::snapshot(
            "work_latency_seconds",
            &[],
            vec![exemplar(0.5, 10), exemplar(1.0, 11), exemplar(9.0, 12)],
        );
        let text = render(&registry.gather(), &exemplars);
        let buckets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("work_latency_seconds_bucket"))
            .collect();
        assert_eq!(
            buckets,
            [
                "work_latency_seconds_bucket{service_name=\"testbed\",le=\"0.005\"} 1",
                "work_latency_seconds_bucket{service_name=\"testbed\",le=\"1.0\"} 3 # \
                 {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 1.0 11.250",
                "work_latency_seconds_bucket{service_name=\"testbed\",le=\"2.5\"} 4",
                "work_latency_seconds_bucket{service_name=\"testbed\",le=\"+Inf\"} 5 # \
                 {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 9.0 12.250",
            ]
        );
        assert!(text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1);
    }

    /// Exemplars of one series do not leak onto another series of the family.
    #[test]
    fn exemplars_follow_their_series() {
        let registry = Registry::new();
        let h = prometheus::HistogramVec::new(
            HistogramOpts::new("rpc_seconds", "RPC").buckets(vec![1.0]),
            &["rpc_method"],
        )
        .unwrap();
        h.with_label_values(&["A"]).observe(0.5);
        h.with_label_values(&["B"]).observe(0.5);
        registry.register(Box::new(h)).unwrap();
        let exemplars = crate::exemplars::tests_support::snapshot(
            "rpc_seconds",
            &[("rpc_method", "B")],
            vec![exemplar(0.5, 1)],
        );
        let text = render(&registry.gather(), &exemplars);
        let with: Vec<&str> = text.lines().filter(|l| l.contains("trace_id")).collect();
        assert_eq!(with.len(), 1, "{text}");
        assert!(
            with[0].starts_with("rpc_seconds_bucket{rpc_method=\"B\",le=\"1.0\"} 1 # "),
            "{text}"
        );
    }

    /// Canonical numbers as Go's %g with `.0`, the form OpenMetrics asks for.
    #[test]
    fn numbers_are_canonical() {
        for (v, want) in [
            (1.0, "1.0"),
            (0.005, "0.005"),
            (0.0005, "0.0005"),
            (0.00001, "1e-05"),
            (10.0, "10.0"),
            (100000.0, "100000.0"),
            (1_000_000.0, "1e+06"),
            (1_234_567.0, "1.234567e+06"),
            (-2.5, "-2.5"),
            (0.0, "0.0"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(float(v), want, "{v}");
        }
    }
}
