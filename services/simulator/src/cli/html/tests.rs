//! The HTML report read back as XML: the verdict, the figures and one SVG
//! per chart are on the page.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::cli::report::Report;
use crate::cli::timeline::Sample;
use crate::cli::verify::{EndToEnd, Verification};
use crate::load::scenario::{Phase, Scenario};
use crate::load::stats::RunFigures;

fn report(verified: bool) -> Report {
    let scenario = Scenario {
        name: "first-run".into(),
        phases: vec![
            Phase::Ramp {
                from: 0.0,
                to: 2000.0,
                duration: Duration::from_secs(2),
            },
            Phase::Hold {
                rate: 2000.0,
                duration: Duration::from_secs(1),
            },
        ],
    };
    let mut figures = RunFigures::new(2);
    let f = &mut figures.total;
    f.sent = 4000;
    f.accepted = 4000;
    f.sent_kinds = [2000, 1500, 500];
    f.accepted_kinds = [2000, 1500, 500];
    f.status_codes.insert("OK".into(), 40);
    f.status_codes.insert("UNAVAILABLE".into(), 2);
    f.count_resent("UNAVAILABLE", 200);
    f.count_resent("UNAVAILABLE", 200);
    for ms in 1..=100u64 {
        f.record_latency(Duration::from_millis(ms));
    }
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut report = Report::new(
        "run-<1>",
        &scenario,
        7,
        "http://127.0.0.1:50051",
        start,
        start + Duration::from_secs(3),
        Duration::from_secs(4),
        &figures,
    );
    report.settings.insert("devices".into(), "1000".into());
    report.timeline = (1..=3)
        .map(|t| Sample {
            t_s: f64::from(t),
            target_rate: 1000.0,
            achieved_rate: 990.0,
            p50_ms: 1.5,
            p99_ms: 4.0,
            p999_ms: 9.0,
            errors: 1,
            retried: 1,
        })
        .collect();
    if verified {
        report.verification = Some(Verification {
            passed: true,
            expected: [2000, 1500, 500],
            processed: [2000, 1500, 500],
            never_acknowledged: [0; 3],
            resent_batches: BTreeMap::from([("UNAVAILABLE".into(), 2)]),
            dead_lettered: 0,
            diff: Vec::new(),
            end_to_end: Some(EndToEnd {
                p50_us: 2500,
                p90_us: 4000,
                p99_us: 7250,
                max_us: 12000,
            }),
        });
    }
    report
}

/// The page as XML (it is well-formed, its doctype aside).
fn parse(html: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse_with_options(
        html,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn by_id(doc: &roxmltree::Document<'_>, id: &str) -> String {
    let node = doc
        .descendants()
        .find(|n| n.attribute("id") == Some(id))
        .unwrap_or_else(|| panic!("no element #{id}"));
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect::<String>()
}

/// A verified run's page is well-formed, self-contained, states the
/// verdict, the figures and the method, and has one SVG per chart.
#[test]
fn a_verified_run_reads_back_from_the_page() {
    let html = super::render(&report(true));
    let doc = parse(&html);
    assert_eq!(
        by_id(&doc, "verdict"),
        "Verification PASSED: 4000 events processed exactly once; 2 batches refused or unanswered and re-sent (UNAVAILABLE 2)"
    );
    assert_eq!(by_id(&doc, "events-accepted"), "4000");
    assert_eq!(by_id(&doc, "offered-rate"), "1000.0");
    assert_eq!(by_id(&doc, "achieved-rate"), "1000.0");
    assert_eq!(by_id(&doc, "ack-p50"), "50.015");
    assert_eq!(by_id(&doc, "e2e-p99"), "7.250");
    assert_eq!(by_id(&doc, "run-id"), "run-<1>");
    assert_eq!(
        by_id(&doc, "phases"),
        "ramp 0/s to 2000/s over 2s; hold 2000/s for 1s"
    );
    assert!(by_id(&doc, "method").contains("free of coordinated omission"));
    let devices = doc
        .descendants()
        .find(|n| n.attribute("data-setting") == Some("devices"))
        .and_then(|n| n.text());
    assert_eq!(devices, Some("1000"));

    let charts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("svg"))
        .filter_map(|n| n.attribute("data-chart"))
        .collect();
    assert_eq!(
        charts,
        [
            "rate",
            "latency-over-time",
            "distribution",
            "status",
            "retries",
            "kinds"
        ]
    );
    let bar = |series: &str, category: &str| {
        doc.descendants()
            .find(|n| {
                n.attribute("data-series") == Some(series)
                    && n.attribute("data-category") == Some(category)
            })
            .and_then(|n| n.attribute("data-value"))
            .map(str::to_owned)
    };
    assert_eq!(bar("processed", "tokens").as_deref(), Some("1500"));
    assert_eq!(bar("attempts", "UNAVAILABLE").as_deref(), Some("2"));
    // One point per sample on the rate chart's lines.
    let achieved = doc
        .descendants()
        .find(|n| n.attribute("data-series") == Some("achieved"))
        .and_then(|n| n.attribute("points"))
        .unwrap();
    assert_eq!(achieved.split(' ').count(), 3);
    // Nothing is fetched: no external URL but the SVG namespace.
    let external = html.matches("http://").count() + html.matches("https://").count();
    let namespaces = html.matches("http://www.w3.org/2000/svg").count();
    let target = html.matches("http://127.0.0.1:50051").count();
    assert_eq!(external, namespaces + target);
}

/// Without --verify the page says the run was not verified and shows no
/// processed bars.
#[test]
fn an_unverified_run_says_so() {
    let html = super::render(&report(false));
    assert!(html.contains(r#"class="verdict unverified""#));
    assert!(!html.contains(r#"data-series="processed""#));
    assert!(!html.contains(r#"id="e2e-p50""#));
}

/// The thresholds table shows each threshold with the value it saw and
/// its verdict, a crossed one marked as such.
#[test]
fn thresholds_show_their_observed_values() {
    let mut report = report(true);
    let t: Vec<crate::thresholds::Threshold> = ["ack_p99<10s", "ack_p99<0.001ms", "verify"]
        .iter()
        .map(|e| e.parse().unwrap())
        .collect();
    let mut figures = RunFigures::new(0);
    for ms in 1..=100u64 {
        figures.total.record_latency(Duration::from_millis(ms));
    }
    report.thresholds = report.check(&t, &figures.total, None);
    let html = super::render(&report);
    let doc = parse(&html);
    assert_eq!(
        by_id(&doc, "thresholds"),
        "thresholdobservedverdict\
         ack_p99<10s99.007mspassed\
         ack_p99<0.001ms99.007mscrossed\
         verifypassedpassed"
    );
}
