//! The page around the charts: verdict, summary table, method note and the
//! run's settings and environment.
//!
//! The markup is also well-formed XML (void elements closed, every
//! attribute quoted), so tests read it with an XML parser.

use std::fmt::Write as _;

use crate::cli::html::charts::{self, Series, XAxis, escape};
use crate::cli::report::{Report, Section};
use crate::load::scenario::Phase;

const KINDS: [&str; 3] = ["gpu", "tokens", "metric"];
const BLUE: &str = "#2563eb";
const ORANGE: &str = "#ea580c";
const GREEN: &str = "#16a34a";
const RED: &str = "#dc2626";
const GREY: &str = "#6b7280";

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1320px;color:#111;padding:0 16px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px}code{font-size:13px}\
.verdict{font-size:18px;font-weight:600;padding:10px 14px;border-radius:6px}\
.passed{background:#dcfce7;color:#14532d}.failed{background:#fee2e2;color:#7f1d1d}.unverified{background:#f3f4f6;color:#374151}\
table{border-collapse:collapse}td,th{padding:3px 12px 3px 0;text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #e5e7eb;border-radius:6px;background:#fff}\
.chart .title{font-weight:600;font-size:13px}.chart text{font-size:11px;fill:#374151}.chart .grid{stroke:#e5e7eb}\
.chart .ylabel{text-anchor:end}.chart .xlabel,.chart .unit,.chart .value{text-anchor:middle}.note{color:#374151;max-width:900px}";

fn row(out: &mut String, id: &str, name: &str, value: &str) {
    let _ = write!(
        out,
        r#"<tr><th>{}</th><td class="n" id="{id}">{}</td></tr>"#,
        escape(name),
        escape(value)
    );
}

fn percent(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.1}%", part / whole * 100.0)
    } else {
        "-".into()
    }
}

fn verdict(report: &Report) -> (&'static str, String) {
    match &report.verification {
        Some(v) if v.passed => ("passed", format!("Verification {}", v.summary())),
        Some(v) => ("failed", format!("Verification {}", v.summary())),
        None => (
            "unverified",
            "Not verified: run with --verify to check every event was processed exactly once"
                .into(),
        ),
    }
}

fn summary(out: &mut String, report: &Report) {
    let t: &Section = &report.total;
    let l = &t.latency;
    let ms = |v: f64| format!("{v:.3}");
    let mut rows: Vec<(&str, &str, String)> = vec![
        (
            "offered-rate",
            "offered rate (events/s, average of the schedule)",
            format!("{:.1}", t.target_rate),
        ),
        (
            "achieved-rate",
            "achieved rate (events/s accepted)",
            format!("{:.1}", t.achieved_rate),
        ),
        (
            "achieved-share",
            "achieved / offered",
            percent(t.achieved_rate, t.target_rate),
        ),
        ("events-sent", "events sent", t.sent.to_string()),
        ("events-accepted", "events accepted", t.accepted.to_string()),
        (
            "events-rejected",
            "events rejected (validation)",
            t.rejected.to_string(),
        ),
        (
            "events-duplicates",
            "accepted duplicates of re-sent batches",
            t.duplicates.to_string(),
        ),
        ("events-failed", "events given up", t.failed.to_string()),
        (
            "events-unanswered",
            "events unanswered at the end",
            t.unanswered.to_string(),
        ),
        (
            "batches-retried",
            "batches re-sent",
            t.retried_batches.to_string(),
        ),
        ("ack-p50", "ack latency p50 (ms)", ms(l.p50_ms)),
        ("ack-p99", "ack latency p99 (ms)", ms(l.p99_ms)),
        ("ack-p999", "ack latency p99.9 (ms)", ms(l.p999_ms)),
        ("ack-max", "ack latency max (ms)", ms(l.max_ms)),
    ];
    if let Some(e) = report
        .verification
        .as_ref()
        .and_then(|v| v.end_to_end.as_ref())
    {
        let us = |us: u64| ms(us as f64 / 1000.0);
        rows.extend([
            (
                "e2e-p50",
                "end-to-end p50 (ms, append to aggregates applied)",
                us(e.p50_us),
            ),
            ("e2e-p99", "end-to-end p99 (ms)", us(e.p99_us)),
            ("e2e-max", "end-to-end max (ms)", us(e.max_us)),
        ]);
    }
    out.push_str("<h2>Summary</h2><table id=\"summary\">");
    for (id, name, value) in rows {
        row(out, id, name, &value);
    }
    out.push_str("</table>");
}

fn phase_text(phase: &Phase) -> String {
    let d = humantime::format_duration(phase.duration());
    match phase {
        Phase::Ramp { from, to, .. } => format!("ramp {from}/s to {to}/s over {d}"),
        Phase::Hold { rate, .. } => format!("hold {rate}/s for {d}"),
        Phase::Burst { multiplier, .. } => format!("burst x{multiplier} for {d}"),
        Phase::Spike { rate, .. } => format!("spike {rate}/s for {d}"),
        Phase::Pause { .. } => format!("pause for {d}"),
    }
}

fn settings(out: &mut String, report: &Report) {
    out.push_str("<h2>Settings and environment</h2><table id=\"settings\">");
    let phases: Vec<String> = report.scenario.phases.iter().map(phase_text).collect();
    for (id, name, value) in [
        ("run-id", "run id", report.run_id.clone()),
        ("scenario", "scenario", report.scenario.name.clone()),
        ("phases", "phases", phases.join("; ")),
        ("seed", "seed", report.seed.to_string()),
        ("target", "ingest target", report.target.clone()),
        (
            "version",
            "simulator version (rev, arch, target)",
            report.version.clone(),
        ),
        ("arch", "architecture", report.arch.clone()),
        ("start", "start", report.start_time.clone()),
        ("end", "end", report.end_time.clone()),
    ] {
        let _ = write!(
            out,
            r#"<tr><th>{}</th><td id="{id}">{}</td></tr>"#,
            escape(name),
            escape(&value)
        );
    }
    for (name, value) in &report.settings {
        let _ = write!(
            out,
            r#"<tr><th>{}</th><td data-setting="{}">{}</td></tr>"#,
            escape(name),
            escape(name),
            escape(value)
        );
    }
    out.push_str("</table>");
    if report.phases.len() > 1 {
        out.push_str("<h2>Phases</h2><table id=\"phase-table\"><tr><th>phase</th><th>duration s</th><th>offered/s</th><th>achieved/s</th><th>p99 ms</th></tr>");
        for p in &report.phases {
            let _ = write!(
                out,
                r#"<tr><td>{}</td><td class="n">{:.1}</td><td class="n">{:.1}</td><td class="n">{:.1}</td><td class="n">{:.3}</td></tr>"#,
                escape(&p.name),
                p.duration_s,
                p.target_rate,
                p.achieved_rate,
                p.latency.p99_ms
            );
        }
        out.push_str("</table>");
    }
}

fn chart_section(out: &mut String, report: &Report) {
    let timeline = &report.timeline;
    let series = |name, color, f: fn(&crate::cli::timeline::Sample) -> f64| Series {
        name,
        color,
        points: timeline.iter().map(|s| (s.t_s, f(s))).collect(),
    };
    // The charts over the run's timeline share their x axis.
    let over_time = |id: &str, title: &str, unit: &str, lines: &[Series<'_>]| {
        charts::line_chart(id, title, "seconds since start", unit, XAxis::Linear, lines)
    };
    out.push_str("<h2>Charts</h2><div class=\"charts\">");
    out.push_str(&over_time(
        "rate",
        "Offered vs achieved rate",
        "events/s",
        &[
            series("offered", GREY, |s| s.target_rate),
            series("achieved", BLUE, |s| s.achieved_rate),
        ],
    ));
    out.push_str(&over_time(
        "latency-over-time",
        "Ack latency per interval",
        "ms",
        &[
            series("p50", GREEN, |s| s.p50_ms),
            series("p99", ORANGE, |s| s.p99_ms),
            series("p99.9", RED, |s| s.p999_ms),
        ],
    ));
    out.push_str(&charts::line_chart(
        "distribution",
        "Ack latency distribution (HDR percentile plot)",
        "percentile",
        "ms",
        XAxis::Percentile,
        &[Series {
            name: "ack latency",
            color: BLUE,
            points: report
                .distribution
                .iter()
                .map(|p| (p.percentile, p.latency_ms))
                .collect(),
        }],
    ));
    let t = &report.total;
    let codes: Vec<String> = t.status_codes.keys().cloned().collect();
    let counts: Vec<f64> = t.status_codes.values().map(|&n| n as f64).collect();
    out.push_str(&charts::bar_chart(
        "status",
        "Answers by status code (one per attempt)",
        "attempts",
        &codes,
        &[("attempts", BLUE, counts)],
    ));
    out.push_str(&over_time(
        "retries",
        "Refusals and re-sent batches per interval",
        "count",
        &[
            series("refusals", RED, |s| s.errors as f64),
            series("re-sent batches", ORANGE, |s| s.retried as f64),
        ],
    ));
    let kinds: Vec<String> = KINDS.iter().map(|k| (*k).to_owned()).collect();
    let as_f64 = |v: &[u64; 3]| v.iter().map(|&n| n as f64).collect::<Vec<_>>();
    let mut kind_series = vec![
        ("sent", GREY, as_f64(&t.sent_kinds)),
        ("accepted", BLUE, as_f64(&t.accepted_kinds)),
    ];
    if let Some(v) = &report.verification {
        kind_series.push(("processed", GREEN, as_f64(&v.processed)));
    }
    out.push_str(&charts::bar_chart(
        "kinds",
        "Events per kind: sent, accepted, processed",
        "events",
        &kinds,
        &kind_series,
    ));
    out.push_str("</div>");
    if !t.resent_batches.is_empty() {
        let _ = write!(
            out,
            r#"<p id="resent">Re-sent batches by reason: {}</p>"#,
            escape(&crate::cli::verify::reasons(&t.resent_batches))
        );
    }
}

/// Each threshold with the value it saw: a crossed one in red.
fn thresholds(out: &mut String, report: &Report) {
    if report.thresholds.is_empty() {
        return;
    }
    out.push_str(
        "<h2>Thresholds</h2><table id=\"thresholds\"><tr><th>threshold</th><th>observed</th><th>verdict</th></tr>",
    );
    for o in &report.thresholds {
        let (class, verdict) = match (o.passed, o.aborted) {
            (true, _) => ("passed", "passed"),
            (false, false) => ("failed", "crossed"),
            (false, true) => ("failed", "crossed live: run stopped early"),
        };
        let _ = write!(
            out,
            r#"<tr class="{class}"><td><code>{}</code></td><td class="n">{}</td><td>{verdict}</td></tr>"#,
            escape(&o.expression),
            escape(&o.observed_text),
        );
    }
    out.push_str("</table>");
}

/// The whole page.
pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/><meta name="viewport" content="width=device-width"/><title>testbed sim {run}</title><style>{STYLE}</style></head><body><h1>testbed sim: run <code>{run}</code></h1>"#,
        run = escape(&report.run_id)
    );
    let (class, text) = verdict(report);
    let _ = write!(
        out,
        r#"<p class="verdict {class}" id="verdict">{}</p>"#,
        escape(&text)
    );
    out.push_str(
        "<p class=\"note\" id=\"method\">The load is <b>open-loop</b>: every batch has an intended send \
         time from the schedule, sent whether or not earlier ones were answered, and its latency is \
         measured from that intended time, not from when it was actually sent. The figures are \
         therefore <b>free of coordinated omission</b>: a stall shows as the latency of every batch it \
         delayed. Ack latency is a batch's time to its acknowledgement by ingest; end-to-end latency \
         (with --verify) is the pipeline's time from append to aggregates applied.</p>",
    );
    summary(&mut out, report);
    thresholds(&mut out, report);
    chart_section(&mut out, report);
    settings(&mut out, report);
    out.push_str("</body></html>\n");
    out
}
