//! The PNG chart: batch-ack and end-to-end latency percentiles against the
//! offered rate, over every split, OTLP-off probe of the run.
//!
//! plotters draws text with `ab_glyph`, a pure-Rust rasteriser that needs
//! a font registered at run time (no system font libraries to link): the
//! first DejaVu Sans found (or `TESTBED_BENCH_FONT`) is used, and without
//! one the chart is drawn without any text.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};
use crate::results::ProbeResult;

/// Well-known places of a sans-serif TrueType font.
const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a font once; whether text can be drawn.
fn font() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        let candidates = std::env::var_os("TESTBED_BENCH_FONT")
            .map(PathBuf::from)
            .into_iter()
            .chain(FONTS.iter().map(PathBuf::from));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                // plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!("no TrueType font found; the chart has no text");
        false
    })
}

/// One point: offered rate, ms, and whether the probe sustained its rate.
type Point = (f64, f64, bool);

/// One series: a name, a colour and its points.
type Series = (&'static str, RGBColor, Vec<Point>);

/// The line through a series: the median of the points at each rate.
fn line(points: &[Point]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let rate = points[i].0;
        let mut same: Vec<f64> = points[i..]
            .iter()
            .take_while(|p| p.0 == rate)
            .map(|p| p.1)
            .collect();
        i += same.len();
        if let Some(m) = crate::results::median(&mut same) {
            out.push((rate, m));
        }
    }
    out
}

/// Builds the series from probes (skipping probes without figures),
/// sorted by offered rate.
fn series(probes: &[&ProbeResult]) -> Vec<Series> {
    let mut sorted: Vec<&ProbeResult> = probes
        .iter()
        .copied()
        .filter(|p| p.accepted > 0 && p.offered_rate > 0.0)
        .collect();
    sorted.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    let pick = |f: fn(&ProbeResult) -> Option<f64>| -> Vec<Point> {
        sorted
            .iter()
            .filter_map(|p| {
                f(p).filter(|v| *v > 0.0)
                    .map(|v| (p.offered_rate, v, p.sustained))
            })
            .collect()
    };
    vec![
        (
            "ack p50",
            RGBColor(31, 119, 180),
            pick(|p| Some(p.ack_latency.p50_ms)),
        ),
        (
            "ack p99",
            RGBColor(255, 127, 14),
            pick(|p| Some(p.ack_latency.p99_ms)),
        ),
        (
            "ack p99.9",
            RGBColor(214, 39, 40),
            pick(|p| Some(p.ack_latency.p999_ms)),
        ),
        (
            "e2e p50",
            RGBColor(44, 160, 44),
            pick(|p| p.e2e.map(|e| e.p50_ms)),
        ),
        (
            "e2e p99",
            RGBColor(148, 103, 189),
            pick(|p| p.e2e.map(|e| e.p99_ms)),
        ),
    ]
}

/// Draws the chart to `path`; `title` goes on top when text can be drawn.
pub fn draw(path: &Path, title: &str, probes: &[&ProbeResult]) -> Result<()> {
    draw_with(path, title, probes, font())
}

/// Draws with or without text.
fn draw_with(path: &Path, title: &str, probes: &[&ProbeResult], text: bool) -> Result<()> {
    let data = series(probes);
    let points = || data.iter().flat_map(|(_, _, p)| p.iter());
    let x_max = points().map(|p| p.0).fold(0.0, f64::max).max(1.0) * 1.05;
    let y_min = points()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .clamp(0.01, 1.0)
        * 0.8;
    let y_max = points().map(|p| p.1).fold(0.0, f64::max).max(10.0) * 1.25;
    let fail = |e: &dyn std::fmt::Display| Error::chart(path, e);

    let root = BitMapBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(50)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(|e| fail(&e))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("offered rate (events/s); lines: median per rate; hollow: rate not sustained")
            .y_desc("latency (ms, log scale)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y}"));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| fail(&e))?;
    for (name, color, pts) in &data {
        let color = *color;
        let drawn = chart
            .draw_series(LineSeries::new(line(pts), color.stroke_width(2)))
            .map_err(|e| fail(&e))?;
        if text {
            drawn.label(*name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        // Filled: the probe sustained its rate; hollow: it did not.
        chart
            .draw_series(pts.iter().map(|&(x, y, sustained)| {
                let style = if sustained {
                    color.filled()
                } else {
                    color.stroke_width(2)
                };
                Circle::new((x, y), 4, style)
            }))
            .map_err(|e| fail(&e))?;
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::E2e;
    use crate::sim::Latency;

    /// The line takes the median of the points at each rate.
    #[test]
    fn line_is_the_median_per_rate() {
        let pts = [
            (1.0, 1.0, true),
            (1.0, 5.0, true),
            (1.0, 3.0, false),
            (2.0, 4.0, true),
        ];
        assert_eq!(line(&pts), vec![(1.0, 3.0), (2.0, 4.0)]);
    }

    /// A chart of a few probes is written as a PNG, with text and without
    /// (no font found).
    #[test]
    fn draws_a_png() {
        let probes: Vec<ProbeResult> = [1000.0, 2000.0, 4000.0]
            .iter()
            .map(|r| ProbeResult {
                offered_rate: *r,
                accepted: 10,
                ack_latency: Latency {
                    p50_ms: r / 1000.0,
                    p99_ms: r / 500.0,
                    p999_ms: r / 250.0,
                    ..Default::default()
                },
                e2e: Some(E2e {
                    p50_ms: 5.0,
                    p99_ms: 20.0,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let refs: Vec<&ProbeResult> = probes.iter().collect();
        let path = std::env::temp_dir().join(format!("bench-chart-{}.png", std::process::id()));
        for text in [true, false] {
            draw_with(&path, "test", &refs, text && font()).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[1..4], b"PNG");
            let _ = std::fs::remove_file(&path);
        }
    }
}
