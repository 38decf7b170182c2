//! Charts as inline SVG, drawn by hand: a line chart (linear or
//! logarithmic x axis) and a grouped bar chart are all the report needs.
//!
//! Why not `plotters` (already in the workspace for the bench harness): its
//! SVG backend would add the crate to the `testbed` binary, and the bench's
//! bitmap features would then be unified into it by a workspace build but
//! not by `cargo build -p testbed`, so `scripts/run` after `scripts/test`
//! would rebuild the binary; a hundred lines of SVG avoid both.

use std::fmt::Write as _;

/// Width and height of every chart, in SVG user units.
const W: f64 = 640.0;
const H: f64 = 280.0;
/// Plot area margins: left (y labels), right, top (title), bottom (x labels).
const L: f64 = 64.0;
const R: f64 = 40.0;
const T: f64 = 48.0;
const B: f64 = 40.0;

/// One line of a line chart.
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// Stroke colour (CSS).
    pub color: &'a str,
    /// Points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// How the x axis of a line chart maps values.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Linear, labelled with the values.
    Linear,
    /// A percentile axis: x is a percentile 0..=100 drawn at
    /// log10(1 / (1 - p/100)), labelled 0%, 90%, 99%, ... (HdrHistogram's
    /// percentile plot).
    Percentile,
}

/// Escapes text for SVG and HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Highest percentile the percentile axis shows (six nines).
const MAX_NINES: f64 = 6.0;

fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(10f64.powf(-MAX_NINES));
    (-rest.log10()).clamp(0.0, MAX_NINES)
}

/// A "nice" upper bound at or above `max`: 1, 2 or 5 times a power of ten.
fn nice(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * power)
}

fn label(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else if value.abs() >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value.abs() >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if value.abs() >= 10.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn open(out: &mut String, id: &str, title: &str) {
    let _ = write!(
        out,
        r#"<svg class="chart" data-chart="{id}" role="img" viewBox="0 0 {W} {H}" width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title><text x="{L}" y="18" class="title">{t}</text>"#,
        t = escape(title)
    );
}

/// The y axis for values up to `max`: its top and its step, a round step
/// (1, 2 or 5 times a power of ten) that fits at most four times.
fn y_axis(max: f64) -> (f64, f64) {
    let step = nice(max / 4.0);
    (step * (max / step).ceil().max(1.0), step)
}

fn y_grid(out: &mut String, (top, step): (f64, f64), unit: &str) {
    let lines = (top / step).round() as u32;
    for i in 0..=lines {
        let v = step * f64::from(i);
        let y = H - B - (H - T - B) * v / top;
        let _ = write!(
            out,
            r#"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="ylabel">{}</text>"#,
            W - R,
            L - 6.0,
            y + 4.0,
            escape(&label(v))
        );
    }
    let _ = write!(
        out,
        r#"<text x="12" y="{:.1}" class="unit" transform="rotate(-90 12 {:.1})">{}</text>"#,
        T + (H - T - B) / 2.0,
        T + (H - T - B) / 2.0,
        escape(unit)
    );
}

fn legend(out: &mut String, entries: &[(&str, &str)]) {
    let mut x = L;
    for (name, color) in entries {
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="27" width="10" height="10" fill="{color}"/><text x="{:.1}" y="36" class="legend">{}</text>"#,
            x + 14.0,
            escape(name)
        );
        x += 24.0 + 7.0 * name.len() as f64;
    }
}

/// A line chart; `x_unit` and `y_unit` label the axes.
pub fn line_chart(
    id: &str,
    title: &str,
    x_unit: &str,
    y_unit: &str,
    axis: XAxis,
    series: &[Series<'_>],
) -> String {
    let mut out = String::new();
    open(&mut out, id, title);
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_max = match axis {
        XAxis::Linear => xs.fold(0.0, f64::max).max(1e-9),
        XAxis::Percentile => xs.map(nines).fold(1.0, f64::max).ceil(),
    };
    let y = y_axis(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let y_max = y.0;
    y_grid(&mut out, y, y_unit);
    let px = |x: f64| {
        let x = if axis == XAxis::Percentile {
            nines(x)
        } else {
            x
        };
        L + (W - L - R) * x / x_max
    };
    let py = |y: f64| H - B - (H - T - B) * (y / y_max).clamp(0.0, 1.0);
    // x labels: five linear steps, or one per nine.
    let ticks: Vec<(f64, String)> = match axis {
        XAxis::Linear => {
            // Round steps (1, 2 or 5 times a power of ten), about five of them.
            let step = nice(x_max / 5.0);
            (0..=((x_max / step).floor() as u32).min(10))
                .map(|i| {
                    let v = step * f64::from(i);
                    (px(v), label(v))
                })
                .collect()
        }
        XAxis::Percentile => (0..=x_max as i32)
            .map(|n| {
                let p = 100.0 * (1.0 - 10f64.powi(-n));
                let decimals = (n - 2).max(0) as usize;
                (
                    L + (W - L - R) * f64::from(n) / x_max,
                    format!("{p:.decimals$}%"),
                )
            })
            .collect(),
    };
    for (x, text) in ticks {
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" class="xlabel">{}</text>"#,
            H - B + 16.0,
            escape(&text)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" class="unit">{}</text>"#,
        L + (W - L - R) / 2.0,
        H - 6.0,
        escape(x_unit)
    );
    for s in series {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="series" data-series="{}" fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            escape(s.name),
            s.color,
            points.join(" ")
        );
    }
    let entries: Vec<(&str, &str)> = series.iter().map(|s| (s.name, s.color)).collect();
    legend(&mut out, &entries);
    out.push_str("</svg>");
    out
}

/// A grouped bar chart: one group per category, one bar per series
/// (`(name, colour, one value per category)`), each labelled with its value.
pub fn bar_chart(
    id: &str,
    title: &str,
    y_unit: &str,
    categories: &[String],
    series: &[(&str, &str, Vec<f64>)],
) -> String {
    let mut out = String::new();
    open(&mut out, id, title);
    let axis = y_axis(
        series
            .iter()
            .flat_map(|s| s.2.iter().copied())
            .fold(0.0, f64::max),
    );
    let y_max = axis.0;
    y_grid(&mut out, axis, y_unit);
    let group = (W - L - R) / categories.len().max(1) as f64;
    let bar = (group * 0.8) / series.len().max(1) as f64;
    for (c, category) in categories.iter().enumerate() {
        let x0 = L + group * c as f64 + group * 0.1;
        for (i, (name, color, values)) in series.iter().enumerate() {
            let v = values.get(c).copied().unwrap_or(0.0);
            let h = (H - T - B) * (v / y_max).clamp(0.0, 1.0);
            let x = x0 + bar * i as f64;
            let _ = write!(
                out,
                r#"<rect class="bar" data-series="{}" data-category="{}" data-value="{v}" x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" class="value">{v}</text>"#,
                escape(name),
                escape(category),
                H - B - h,
                (bar - 2.0).max(1.0),
                x + bar / 2.0,
                H - B - h - 3.0,
            );
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" class="xlabel">{}</text>"#,
            x0 + group * 0.4,
            H - B + 16.0,
            escape(category)
        );
    }
    let entries: Vec<(&str, &str)> = series.iter().map(|s| (s.0, s.1)).collect();
    legend(&mut out, &entries);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Axis bounds round up to 1, 2 or 5 times a power of ten.
    #[test]
    fn nice_bounds() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(3.2), 5.0);
        assert_eq!(nice(1000.0), 1000.0);
        assert_eq!(nice(1001.0), 2000.0);
    }

    /// The y axis ends at the first round step at or above the largest
    /// value: 31 ms gets 0, 10, 20, 30, 40; 3000 events/s 0, 1000, ... 3000.
    #[test]
    fn y_axis_steps_are_round() {
        assert_eq!(y_axis(31.0), (40.0, 10.0));
        assert_eq!(y_axis(3000.0), (3000.0, 1000.0));
        assert_eq!(y_axis(0.0), (1.0, 1.0));
    }

    /// The percentile axis puts 90% at one nine, 99.9% at three.
    #[test]
    fn percentile_axis_counts_nines() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), MAX_NINES);
    }

    /// Text is escaped, so a run id cannot break the page.
    #[test]
    fn text_is_escaped() {
        let svg = bar_chart(
            "x",
            "a<b & \"c\"",
            "n",
            &["<k>".into()],
            &[("s", "red", vec![2.0])],
        );
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot;"));
        assert!(svg.contains("data-category=\"&lt;k&gt;\""));
        assert!(svg.contains("data-value=\"2\""));
    }
}
