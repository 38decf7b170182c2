//! The end-to-end latency target, judged on the latency step's rows:
//! ingest append to aggregate applied, p99 ≤ [`LIGHT_P99_MS`] at every
//! level up to [`LIGHT_UP_TO`] of saturation and ≤ [`HALF_P99_MS`] at half.

use crate::results::LatencyRow;

/// Light load: every level at or below this share of saturation.
pub const LIGHT_UP_TO: f64 = 0.25;
/// End-to-end p99 at light load, ms.
pub const LIGHT_P99_MS: f64 = 10.0;
/// End-to-end p99 at 50% of saturation, ms.
pub const HALF_P99_MS: f64 = 50.0;

/// The target, and the measured text and whether it was met (none: no
/// light level or no 50% level was measured with an end-to-end figure).
pub fn verdict(rows: &[LatencyRow]) -> (&'static str, Option<(String, bool)>) {
    let target = "end-to-end p99 <= 10 ms at 2-25% of saturation, <= 50 ms at 50%";
    let measured: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.e2e_p99_ms.map(|p99| (r.fraction, p99)))
        .collect();
    let light: Vec<&(f64, f64)> = measured
        .iter()
        .filter(|(f, _)| *f <= LIGHT_UP_TO + 1e-9)
        .collect();
    let Some(half) = measured.iter().find(|(f, _)| (f - 0.5).abs() < 1e-9) else {
        return (target, None);
    };
    if light.is_empty() {
        return (target, None);
    }
    let each = light
        .iter()
        .chain(std::iter::once(&half))
        .map(|(f, p99)| format!("{p99:.1} ms at {}%", (f * 1000.0).round() / 10.0))
        .collect::<Vec<_>>()
        .join(", ");
    let met = light.iter().all(|(_, p99)| *p99 <= LIGHT_P99_MS) && half.1 <= HALF_P99_MS;
    (target, Some((each, met)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fraction: f64, e2e_p99_ms: Option<f64>) -> LatencyRow {
        LatencyRow {
            fraction,
            e2e_p99_ms,
            ..LatencyRow::default()
        }
    }

    #[test]
    fn met_only_when_every_light_level_and_half_are_within() {
        let rows = [
            row(0.02, Some(4.0)),
            row(0.25, Some(9.5)),
            row(0.5, Some(42.0)),
            row(0.8, Some(300.0)),
        ];
        let (_, measured) = verdict(&rows);
        assert_eq!(
            measured,
            Some((
                "4.0 ms at 2%, 9.5 ms at 25%, 42.0 ms at 50%".to_owned(),
                true
            ))
        );
        let slow_light = [row(0.02, Some(11.0)), row(0.5, Some(42.0))];
        assert_eq!(verdict(&slow_light).1.map(|m| m.1), Some(false));
        let slow_half = [row(0.25, Some(3.0)), row(0.5, Some(51.0))];
        assert_eq!(verdict(&slow_half).1.map(|m| m.1), Some(false));
    }

    #[test]
    fn not_judged_without_a_light_and_a_half_level() {
        assert_eq!(verdict(&[]).1, None);
        assert_eq!(verdict(&[row(0.5, Some(3.0))]).1, None);
        assert_eq!(verdict(&[row(0.25, Some(3.0))]).1, None);
        assert_eq!(
            verdict(&[row(0.25, Some(3.0)), row(0.5, None)]).1,
            None,
            "a level without an end-to-end figure is not measured"
        );
    }
}
