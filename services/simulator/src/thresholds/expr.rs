//! The threshold grammar: `METRIC OP NUMBER[UNIT]`, optionally followed by
//! `:abort`, e.g. `ack_p99<10ms`, `errors < 0.1%`, `achieved>=99%:abort`,
//! or the bare word `verify`.
//!
//! Parsing checks everything a threshold can get wrong before a run
//! starts: the metric, the operator, the number, and the unit the metric
//! takes; the error names the part that failed.

use std::fmt;
use std::str::FromStr;

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Batch-ack latency from the intended send time: a percentile (`p50`,
    /// `p90`, `p99`, `p999`), `max` or `mean`.
    Ack(Stat),
    /// End-to-end latency measured by `--verify` (append to aggregates
    /// applied): `p50`, `p90`, `p99` or `max`.
    EndToEnd(Stat),
    /// Batch attempts answered with a status other than OK, of all attempts.
    Errors,
    /// Events rejected by validation, of the events sent.
    Rejected,
    /// Events given up (after the retry limit), of the events sent.
    Failed,
    /// Accepted events per second, of the target rate.
    Achieved,
    /// Accepted events per second.
    AchievedRate,
    /// Batches re-sent.
    Retried,
    /// `--verify` found every accepted event processed exactly once.
    Verify,
    /// The longest time between two acknowledgements that accepted events
    /// (how long publishing stopped at worst); checked live, it counts the
    /// gap still open.
    Gap,
}

/// A statistic of a latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
    /// Slowest.
    Max,
    /// Mean.
    Mean,
}

/// What a metric's numbers are, which decides the units it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A duration, kept in milliseconds; needs `us`, `ms` or `s`.
    Latency,
    /// A fraction; `%` or a plain fraction (`0.001` = `0.1%`).
    Ratio,
    /// Events per second; a plain number or `/s`.
    Rate,
    /// A plain count.
    Count,
    /// Pass or fail.
    Verdict,
}

/// Every metric name, as the errors list them.
const NAMES: &str = "ack_p50, ack_p90, ack_p99, ack_p999, ack_max, ack_mean, e2e_p50, e2e_p90, \
                     e2e_p99, e2e_max, errors, rejected, failed, achieved, achieved_rate, \
                     retried, verify, gap";

impl Metric {
    fn parse(name: &str) -> Option<Self> {
        let stat = |s: &str| match s {
            "p50" => Some(Stat::P50),
            "p90" => Some(Stat::P90),
            "p99" => Some(Stat::P99),
            "p999" => Some(Stat::P999),
            "max" => Some(Stat::Max),
            "mean" => Some(Stat::Mean),
            _ => None,
        };
        Some(match name {
            "errors" => Self::Errors,
            "rejected" => Self::Rejected,
            "failed" => Self::Failed,
            "achieved" => Self::Achieved,
            "achieved_rate" => Self::AchievedRate,
            "retried" => Self::Retried,
            "verify" => Self::Verify,
            "gap" => Self::Gap,
            _ => {
                if let Some(s) = name.strip_prefix("ack_") {
                    Self::Ack(stat(s)?)
                } else if let Some(s) = name.strip_prefix("e2e_") {
                    // --verify measures these four only.
                    match stat(s)? {
                        Stat::P999 | Stat::Mean => return None,
                        s => Self::EndToEnd(s),
                    }
                } else {
                    return None;
                }
            }
        })
    }

    /// The kind of number the metric is.
    pub fn kind(self) -> Kind {
        match self {
            Self::Ack(_) | Self::EndToEnd(_) | Self::Gap => Kind::Latency,
            Self::Errors | Self::Rejected | Self::Failed | Self::Achieved => Kind::Ratio,
            Self::AchievedRate => Kind::Rate,
            Self::Retried => Kind::Count,
            Self::Verify => Kind::Verdict,
        }
    }

    /// Whether only `--verify` measures it.
    pub fn needs_verify(self) -> bool {
        matches!(self, Self::EndToEnd(_) | Self::Verify)
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    /// Whether `observed OP limit` holds.
    pub fn holds(self, observed: f64, limit: f64) -> bool {
        match self {
            Self::Lt => observed < limit,
            Self::Le => observed <= limit,
            Self::Gt => observed > limit,
            Self::Ge => observed >= limit,
        }
    }
}

/// One threshold, as given and as understood.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The expression as given (trimmed), for reports.
    pub expression: String,
    /// What it measures.
    pub metric: Metric,
    /// How it compares (unused for `verify`).
    pub op: Op,
    /// The limit in the metric's own unit: ms, a fraction, events/s or a
    /// count (unused for `verify`).
    pub limit: f64,
    /// Also checked live, over a sliding window, stopping the run when
    /// crossed.
    pub abort: bool,
}

/// Why an expression was refused; the message names the failing part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("threshold {expression:?}: {part:?} {why}")]
pub struct ParseError {
    /// The whole expression.
    pub expression: String,
    /// The part that failed to parse.
    pub part: String,
    /// What is wrong with it.
    pub why: String,
}

impl FromStr for Threshold {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let expression = text.trim();
        let fail = |part: &str, why: &str| ParseError {
            expression: expression.to_owned(),
            part: part.trim().to_owned(),
            why: why.to_owned(),
        };
        if expression.is_empty() {
            return Err(fail(
                "",
                "is empty: expected METRIC OP VALUE, e.g. ack_p99<10ms",
            ));
        }
        let (body, abort) = match expression.rsplit_once(':') {
            Some((body, option)) if option.trim() == "abort" => (body.trim(), true),
            Some((_, option)) => {
                return Err(fail(option, "is not an option (the only one is `:abort`)"));
            }
            None => (expression, false),
        };
        let end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        let name = &body[..end];
        if name.is_empty() {
            return Err(fail(body, "does not start with a metric name"));
        }
        let metric = Metric::parse(name)
            .ok_or_else(|| fail(name, &format!("is not a metric (one of {NAMES})")))?;
        let rest = body[end..].trim_start();
        if metric == Metric::Verify {
            if !rest.is_empty() {
                return Err(fail(rest, "follows `verify`, which takes no comparison"));
            }
            if abort {
                return Err(fail(
                    "abort",
                    "cannot apply to `verify`, known only after the run",
                ));
            }
            return Ok(Self {
                expression: expression.to_owned(),
                metric,
                op: Op::Ge,
                limit: 1.0,
                abort,
            });
        }
        if abort && metric.needs_verify() {
            return Err(fail(
                "abort",
                &format!("cannot apply to {name}, measured by --verify after the run"),
            ));
        }
        let (op, rest) = if let Some(r) = rest.strip_prefix("<=") {
            (Op::Le, r)
        } else if let Some(r) = rest.strip_prefix(">=") {
            (Op::Ge, r)
        } else if let Some(r) = rest.strip_prefix('<') {
            (Op::Lt, r)
        } else if let Some(r) = rest.strip_prefix('>') {
            (Op::Gt, r)
        } else if rest.is_empty() {
            return Err(fail(name, "needs a comparison: <, <=, > or >= and a value"));
        } else {
            return Err(fail(rest, "is not a comparison (one of <, <=, >, >=)"));
        };
        let value = rest.trim();
        let split = value
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(value.len());
        let (number, unit) = (&value[..split], value[split..].trim());
        if number.is_empty() {
            return Err(fail(value, "is not a number"));
        }
        let n: f64 = number
            .parse()
            .map_err(|_| fail(number, "is not a number"))?;
        let limit = match (metric.kind(), unit) {
            (Kind::Latency, "us" | "µs") => n / 1000.0,
            (Kind::Latency, "ms") => n,
            (Kind::Latency, "s") => n * 1000.0,
            (Kind::Latency, "") => return Err(fail(value, "needs a unit: us, ms or s")),
            (Kind::Latency, _) => return Err(fail(unit, "is not a unit of time (us, ms, s)")),
            (Kind::Ratio, "%") => n / 100.0,
            (Kind::Ratio, "") => n,
            (Kind::Ratio, _) => {
                return Err(fail(
                    unit,
                    "is not a unit of a ratio (% or a plain fraction)",
                ));
            }
            (Kind::Rate, "" | "/s") => n,
            (Kind::Rate, _) => return Err(fail(unit, "is not a unit of a rate (/s)")),
            (Kind::Count, "") => n,
            (Kind::Count, _) => return Err(fail(unit, "is not allowed: a count has no unit")),
            // `verify` returned above, before any value.
            (Kind::Verdict, _) => 1.0,
        };
        Ok(Self {
            expression: expression.to_owned(),
            metric,
            op,
            limit,
            abort,
        })
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

/// For clap: a threshold, or the message naming the failing part.
pub fn parse_threshold(text: &str) -> Result<Threshold, String> {
    text.parse().map_err(|e: ParseError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Threshold {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// Every metric parses, each with its own units, into its own unit.
    #[test]
    fn every_metric_and_unit() {
        for (text, metric, limit) in [
            ("ack_p50<1ms", Metric::Ack(Stat::P50), 1.0),
            ("ack_p90<2ms", Metric::Ack(Stat::P90), 2.0),
            ("ack_p99<10ms", Metric::Ack(Stat::P99), 10.0),
            ("ack_p999<1s", Metric::Ack(Stat::P999), 1000.0),
            ("ack_max<1.5s", Metric::Ack(Stat::Max), 1500.0),
            ("ack_mean<500us", Metric::Ack(Stat::Mean), 0.5),
            ("ack_p99<0.001ms", Metric::Ack(Stat::P99), 0.001),
            ("e2e_p50<1s", Metric::EndToEnd(Stat::P50), 1000.0),
            ("e2e_p90<1s", Metric::EndToEnd(Stat::P90), 1000.0),
            ("e2e_p99<250ms", Metric::EndToEnd(Stat::P99), 250.0),
            ("e2e_max<2s", Metric::EndToEnd(Stat::Max), 2000.0),
            ("errors<0.1%", Metric::Errors, 0.001),
            ("errors<0.01", Metric::Errors, 0.01),
            ("rejected<=0", Metric::Rejected, 0.0),
            ("failed<1%", Metric::Failed, 0.01),
            ("achieved>=99%", Metric::Achieved, 0.99),
            ("achieved>0.5", Metric::Achieved, 0.5),
            ("achieved_rate>=900", Metric::AchievedRate, 900.0),
            ("achieved_rate>=900/s", Metric::AchievedRate, 900.0),
            ("retried<10", Metric::Retried, 10.0),
        ] {
            let t = parse(text);
            assert_eq!(
                (t.metric, t.limit, t.abort),
                (metric, limit, false),
                "{text}"
            );
            assert_eq!(t.expression, text);
        }
        let v = parse("verify");
        assert_eq!(v.metric, Metric::Verify);
    }

    /// The four operators, with or without spaces around them.
    #[test]
    fn operators_and_whitespace() {
        for (text, op) in [
            ("ack_p99<10ms", Op::Lt),
            ("ack_p99 <= 10ms", Op::Le),
            ("  ack_p99>10 ms ", Op::Gt),
            ("ack_p99 >=10ms", Op::Ge),
        ] {
            let t = parse(text);
            assert_eq!((t.op, t.limit), (op, 10.0), "{text}");
            assert_eq!(t.expression, text.trim());
        }
        assert!(Op::Lt.holds(1.0, 2.0) && !Op::Lt.holds(2.0, 2.0));
        assert!(Op::Le.holds(2.0, 2.0) && !Op::Le.holds(3.0, 2.0));
        assert!(Op::Gt.holds(3.0, 2.0) && !Op::Gt.holds(2.0, 2.0));
        assert!(Op::Ge.holds(2.0, 2.0) && !Op::Ge.holds(1.0, 2.0));
    }

    /// `:abort` marks a threshold as live, with or without spaces.
    #[test]
    fn abort_suffix() {
        let t = parse("ack_p99<10ms:abort");
        assert!(t.abort);
        assert_eq!((t.metric, t.limit), (Metric::Ack(Stat::P99), 10.0));
        assert!(parse("errors < 1% : abort").abort);
        assert_eq!(parse("achieved>=99%:abort").limit, 0.99);
    }

    /// A malformed expression is refused naming the part that failed.
    #[test]
    fn malformed_names_the_part() {
        for (text, part) in [
            ("", ""),
            ("ack_p98<10ms", "ack_p98"),
            ("latency<10ms", "latency"),
            ("e2e_p999<1s", "e2e_p999"),
            ("<10ms", "<10ms"),
            ("ack_p99", "ack_p99"),
            ("ack_p99=10ms", "=10ms"),
            ("ack_p99==10ms", "==10ms"),
            ("ack_p99<", ""),
            ("ack_p99<ten ms", "ten ms"),
            ("ack_p99<1.2.3ms", "1.2.3"),
            ("ack_p99<10", "10"),
            ("ack_p99<10m", "m"),
            ("errors<1ms", "ms"),
            ("achieved_rate>10%", "%"),
            ("retried<1%", "%"),
            ("ack_p99<10ms:stop", "stop"),
            ("verify<1", "<1"),
            ("verify:abort", "abort"),
            ("e2e_p99<1s:abort", "abort"),
        ] {
            let err = text.parse::<Threshold>().unwrap_err();
            assert_eq!(err.part, part, "{text}: {err}");
            assert!(err.to_string().contains(&format!("{part:?}")), "{err}");
        }
    }
}
