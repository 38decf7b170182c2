//! Request defaults and bounds, as the proto documents them. Every error
//! names the field exactly as the proto spells it.

use std::time::Duration;

use testbed_proto::prost_types;
use testbed_proto::v1::{TokenGroupBy, TopMetric};

use crate::error::QueryError;

/// Default window of the device, ranking and token queries.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Default window of the pipeline queries.
pub const DEFAULT_PIPELINE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Shortest window: one minute bucket.
pub const MIN_WINDOW: Duration = Duration::from_secs(60);
/// Longest window.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Default WatchPipelineStats interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest WatchPipelineStats interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest WatchPipelineStats interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// Default and largest ListDevices page.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Larger page sizes are clamped to this.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Default and largest TopDevices limit.
pub const DEFAULT_LIMIT: usize = 10;
/// Larger limits are clamped to this.
pub const MAX_LIMIT: usize = 100;

/// Longest device or run id (the ingest rule).
const MAX_ID_LEN: usize = 128;

fn std_duration(field: &'static str, d: &prost_types::Duration) -> Result<Duration, QueryError> {
    Duration::try_from(*d).map_err(|_| {
        QueryError::invalid(
            field,
            format!(
                "must be a non-negative duration, got {}s {}ns",
                d.seconds, d.nanos
            ),
        )
    })
}

fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// The `window` field: `default` when unset (but never past `retention`),
/// else within 1m..24h and no longer than `retention`.
pub fn window(
    value: Option<&prost_types::Duration>,
    default: Duration,
    retention: Duration,
) -> Result<Duration, QueryError> {
    let Some(value) = value else {
        return Ok(default.min(retention));
    };
    let d = std_duration("window", value)?;
    if !(MIN_WINDOW..=MAX_WINDOW).contains(&d) {
        return Err(QueryError::invalid(
            "window",
            format!(
                "must be within {}..{}, got {}",
                human(MIN_WINDOW),
                human(MAX_WINDOW),
                human(d)
            ),
        ));
    }
    if d > retention {
        return Err(QueryError::invalid(
            "window",
            format!(
                "must not exceed the retention of {}, got {}",
                human(retention),
                human(d)
            ),
        ));
    }
    Ok(d)
}

/// The WatchPipelineStats `interval`: 1s when unset, else 100ms..60s.
pub fn interval(value: Option<&prost_types::Duration>) -> Result<Duration, QueryError> {
    let Some(value) = value else {
        return Ok(DEFAULT_INTERVAL);
    };
    let d = std_duration("interval", value)?;
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&d) {
        return Err(QueryError::invalid(
            "interval",
            format!(
                "must be within {}..{}, got {}",
                human(MIN_INTERVAL),
                human(MAX_INTERVAL),
                human(d)
            ),
        ));
    }
    Ok(d)
}

/// A count with a default for 0, clamped above, negative rejected.
fn bounded(
    field: &'static str,
    value: i32,
    default: usize,
    max: usize,
) -> Result<usize, QueryError> {
    match usize::try_from(value) {
        Err(_) => Err(QueryError::invalid(
            field,
            format!("must not be negative, got {value}"),
        )),
        Ok(0) => Ok(default),
        Ok(n) => Ok(n.min(max)),
    }
}

/// ListDevices `page_size`: 100 when 0, at most 1000.
pub fn page_size(value: i32) -> Result<usize, QueryError> {
    bounded("page_size", value, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
}

/// TopDevices `limit`: 10 when 0, at most 100.
pub fn limit(value: i32) -> Result<usize, QueryError> {
    bounded("limit", value, DEFAULT_LIMIT, MAX_LIMIT)
}

/// TopDevices `metric`: required.
pub fn top_metric(value: i32) -> Result<TopMetric, QueryError> {
    match TopMetric::try_from(value) {
        Ok(TopMetric::Unspecified) => Err(QueryError::invalid("metric", "must be set")),
        Ok(metric) => Ok(metric),
        Err(_) => Err(QueryError::invalid(
            "metric",
            format!("unknown TopMetric value {value}"),
        )),
    }
}

/// GetTokenUsage `group_by`: unset means by model.
pub fn group_by(value: i32) -> Result<TokenGroupBy, QueryError> {
    match TokenGroupBy::try_from(value) {
        Ok(TokenGroupBy::Unspecified) => Ok(TokenGroupBy::Model),
        Ok(group) => Ok(group),
        Err(_) => Err(QueryError::invalid(
            "group_by",
            format!("unknown TokenGroupBy value {value}"),
        )),
    }
}

/// A required device or run id, by the ingest rules (1..=128 characters of
/// `[A-Za-z0-9._:-]`): an id ingest would refuse can never be found, and
/// checking it keeps arbitrary text out of key names.
pub fn id<'a>(field: &'static str, value: &'a str) -> Result<&'a str, QueryError> {
    if value.is_empty() {
        return Err(QueryError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(QueryError::invalid(
            field,
            format!(
                "must be at most {MAX_ID_LEN} characters, got {}",
                value.len()
            ),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(QueryError::invalid(
            field,
            format!("must use only [A-Za-z0-9._:-], found {bad:?}"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn secs(seconds: i64) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos: 0 }
    }

    fn field_of(err: QueryError) -> &'static str {
        match err {
            QueryError::InvalidArgument { field, .. } => field,
            other => panic!("not a bad request: {other:?}"),
        }
    }

    /// Unset windows take the default (capped by retention); set ones must
    /// lie within 1m..24h and the retention.
    #[test]
    fn window_defaults_and_bounds() {
        assert_eq!(window(None, DEFAULT_WINDOW, HOUR).unwrap(), DEFAULT_WINDOW);
        assert_eq!(
            window(None, DEFAULT_WINDOW, Duration::from_secs(600)).unwrap(),
            Duration::from_secs(600)
        );
        assert_eq!(
            window(Some(&secs(60)), DEFAULT_WINDOW, HOUR).unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            window(Some(&secs(86_400)), DEFAULT_WINDOW, 2 * MAX_WINDOW).unwrap(),
            MAX_WINDOW
        );
        for bad in [secs(10), secs(59), secs(25 * 3600), secs(-60), secs(7200)] {
            let err = window(Some(&bad), DEFAULT_WINDOW, HOUR).unwrap_err();
            assert_eq!(field_of(err), "window", "{bad:?}");
        }
        let err = window(Some(&secs(7200)), DEFAULT_WINDOW, HOUR).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid window: must not exceed the retention of 1h, got 2h"
        );
    }

    /// The watch interval defaults to 1s and allows 100ms..60s.
    #[test]
    fn interval_defaults_and_bounds() {
        assert_eq!(interval(None).unwrap(), Duration::from_secs(1));
        let ms = |n: i32| prost_types::Duration {
            seconds: 0,
            nanos: n * 1_000_000,
        };
        assert_eq!(
            interval(Some(&ms(100))).unwrap(),
            Duration::from_millis(100)
        );
        assert_eq!(interval(Some(&secs(60))).unwrap(), Duration::from_secs(60));
        for bad in [ms(99), secs(61), secs(-1)] {
            assert_eq!(field_of(interval(Some(&bad)).unwrap_err()), "interval");
        }
    }

    /// Page sizes and limits: 0 is the default, large values clamp,
    /// negative values are rejected naming the field.
    #[test]
    fn counts_default_clamp_and_reject() {
        assert_eq!(page_size(0).unwrap(), 100);
        assert_eq!(page_size(3).unwrap(), 3);
        assert_eq!(page_size(5000).unwrap(), 1000);
        assert_eq!(field_of(page_size(-1).unwrap_err()), "page_size");
        assert_eq!(limit(0).unwrap(), 10);
        assert_eq!(limit(100).unwrap(), 100);
        assert_eq!(limit(101).unwrap(), 100);
        assert_eq!(field_of(limit(-5).unwrap_err()), "limit");
    }

    /// The metric is required; group_by defaults to model.
    #[test]
    fn enums() {
        assert_eq!(field_of(top_metric(0).unwrap_err()), "metric");
        assert_eq!(field_of(top_metric(99).unwrap_err()), "metric");
        assert_eq!(top_metric(4).unwrap(), TopMetric::Tokens);
        assert_eq!(group_by(0).unwrap(), TokenGroupBy::Model);
        assert_eq!(group_by(2).unwrap(), TokenGroupBy::Tenant);
        assert_eq!(field_of(group_by(3).unwrap_err()), "group_by");
    }

    /// Ids follow the ingest rules.
    #[test]
    fn ids() {
        assert_eq!(id("device_id", "gpu-node:01").unwrap(), "gpu-node:01");
        assert_eq!(field_of(id("device_id", "").unwrap_err()), "device_id");
        assert_eq!(field_of(id("run_id", "a/b").unwrap_err()), "run_id");
        assert_eq!(
            field_of(id("run_id", &"x".repeat(129)).unwrap_err()),
            "run_id"
        );
    }
}
