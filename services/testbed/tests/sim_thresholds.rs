//! `testbed sim --threshold` against a real `testbed all` (embedded log),
//! and `RunSpec.thresholds` through `SimulatorService`: the verdict a
//! pipeline needs. Exit 0 when every threshold holds, 99 when one is
//! crossed (named with its observed value in the reports), an `:abort`
//! threshold stops the run early, a malformed one is refused at start
//! naming the part that failed (exit 2, INVALID_ARGUMENT).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Testbed;
use testbed_proto::v1::simulator_service_client::SimulatorServiceClient;
use testbed_proto::v1::{
    RateLoad, Run, RunSpec, RunState, StartRunRequest, WatchRunRequest, run_spec::Load,
};
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_types::StatusExt as _;

/// How a `testbed sim` run ended.
struct Ended {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    report: serde_json::Value,
    took: Duration,
}

/// `testbed sim` at 200 events/s against `tb` with `args`, its report in
/// `format` to a file (the text summary still on stdout).
async fn sim(tb: Option<&Testbed>, name: &str, format: &str, args: &[&str]) -> Ended {
    // No server: a refused start never connects.
    let target = tb.map_or("http://127.0.0.1:9".to_owned(), |tb| {
        format!("http://{}", tb.addr)
    });
    let started = Instant::now();
    let (output, report) = common::sim::run_to_end(
        &format!("thresholds-{name}"),
        &["--target", &target, "--rate", "200", "--devices", "4"],
        format,
        args,
    )
    .await;
    Ended {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        report,
        took: started.elapsed(),
    }
}

async fn all() -> Testbed {
    let tb = Testbed::start(&["all"]);
    tb.wait_serving("testbed.v1.IngestService").await;
    tb
}

/// Thresholds that hold: exit 0, each in the JSON record as passed with
/// its observed value, and in the text summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_that_hold_exit_0() {
    let tb = all().await;
    let ended = sim(
        Some(&tb),
        "hold",
        "json",
        &[
            "--duration",
            "2s",
            "--threshold",
            "ack_p99<10s",
            "--threshold",
            "errors<1%,achieved>=50%",
            "--threshold",
            "retried<=0",
        ],
    )
    .await;
    assert_eq!(ended.code, Some(0), "{}", ended.stderr);
    let t = ended.report["thresholds"].as_array().unwrap();
    let expressions: Vec<&str> = t
        .iter()
        .map(|o| o["expression"].as_str().unwrap())
        .collect();
    assert_eq!(
        expressions,
        ["ack_p99<10s", "errors<1%", "achieved>=50%", "retried<=0"]
    );
    assert!(
        t.iter()
            .all(|o| o["passed"] == true && o["aborted"] == false),
        "{t:?}"
    );
    let p99 = t[0]["observed"].as_f64().unwrap();
    assert!(p99 > 0.0 && p99 < 10_000.0, "{p99}");
    assert_eq!(t[1]["observed"].as_f64(), Some(0.0));
    let achieved = t[2]["observed"].as_f64().unwrap();
    assert!(achieved > 0.5, "{achieved}");
    assert!(
        ended.stdout.contains(&format!(
            "pass ack_p99<10s  observed {}",
            t[0]["observed_text"].as_str().unwrap()
        )),
        "{}",
        ended.stdout
    );
}

/// A crossed threshold: exit 99, stderr names it with its observed value,
/// the ghz-JSON report has it as not passed, and the text summary says FAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossed_threshold_exits_99() {
    let tb = all().await;
    let ended = sim(
        Some(&tb),
        "crossed",
        "ghz-json",
        &[
            "--duration",
            "1s",
            "--threshold",
            "ack_p99<0.001ms",
            "--threshold",
            "ack_p99<10s",
        ],
    )
    .await;
    assert_eq!(ended.code, Some(99), "{}", ended.stderr);
    let t = ended.report["thresholds"].as_array().unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["expression"], "ack_p99<0.001ms");
    assert_eq!(t[0]["passed"], false);
    assert_eq!(t[1]["passed"], true);
    let observed = t[0]["observedText"].as_str().unwrap();
    assert!(t[0]["observed"].as_f64().unwrap() > 0.001, "{t:?}");
    assert_eq!(ended.report["endReason"], "normal");
    assert!(
        ended.stderr.contains(&format!(
            "thresholds crossed: ack_p99<0.001ms (observed {observed})"
        )),
        "{}",
        ended.stderr
    );
    assert!(
        ended
            .stdout
            .contains(&format!("FAIL ack_p99<0.001ms  observed {observed}")),
        "{}",
        ended.stdout
    );
}

/// An `:abort` threshold crossed live stops a 30 s run after its warm-up:
/// exit 99, the report marks it aborted and the run is short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_threshold_stops_the_run_early() {
    let tb = all().await;
    let ended = sim(
        Some(&tb),
        "abort",
        "json",
        &[
            "--duration",
            "30s",
            "--threshold",
            "ack_p99<0.001ms:abort",
            "--threshold-warmup",
            "500ms",
            "--threshold-window",
            "1s",
        ],
    )
    .await;
    assert_eq!(ended.code, Some(99), "{}", ended.stderr);
    assert!(ended.took < Duration::from_secs(15), "{:?}", ended.took);
    let t = &ended.report["thresholds"][0];
    assert_eq!(
        (t["passed"].as_bool(), t["aborted"].as_bool()),
        (Some(false), Some(true)),
        "{t}"
    );
    let ran = ended.report["total"]["duration_s"].as_f64().unwrap();
    assert!(ran < 10.0, "{ran}");
    assert!(
        ended
            .stdout
            .contains("crossed live: the run was stopped early"),
        "{}",
        ended.stdout
    );
}

/// Malformed thresholds are refused before anything starts: exit 2 and
/// the failing part named, on the flag and in a scenario file; `verify`
/// without --verify too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_thresholds_are_refused_at_start() {
    let ended = sim(
        None,
        "bad-flag",
        "text",
        &["--threshold", "ack_p99<10parsecs"],
    )
    .await;
    assert_eq!(ended.code, Some(2), "{}", ended.stderr);
    assert!(ended.stderr.contains("--threshold"), "{}", ended.stderr);
    assert!(
        ended.stderr.contains("\"parsecs\" is not a unit of time"),
        "{}",
        ended.stderr
    );

    let scenario = std::env::temp_dir().join(format!("thresholds-{}.toml", std::process::id()));
    std::fs::write(
        &scenario,
        "thresholds = [\n  \"ack_p99<10ms\",\n  \"latency<1s\",\n]\n[[phase]]\nkind = \"hold\"\nrate = 10\nduration = \"1s\"\n",
    )
    .unwrap();
    let ended = sim(
        None,
        "bad-file",
        "text",
        &["--scenario", scenario.to_str().unwrap()],
    )
    .await;
    let _ = std::fs::remove_file(&scenario);
    assert_eq!(ended.code, Some(2), "{}", ended.stderr);
    assert!(
        ended.stderr.contains("line 3: thresholds[1]"),
        "{}",
        ended.stderr
    );
    assert!(
        ended.stderr.contains("\"latency\" is not a metric"),
        "{}",
        ended.stderr
    );

    let ended = sim(None, "no-verify", "text", &["--threshold", "verify"]).await;
    assert_eq!(ended.code, Some(2), "{}", ended.stderr);
    assert!(ended.stderr.contains("needs --verify"), "{}", ended.stderr);
}

/// Waits for the run's final state through WatchRun.
async fn final_run(
    client: &mut SimulatorServiceClient<tonic::transport::Channel>,
    id: &str,
) -> Run {
    let mut stream = client
        .watch_run(WatchRunRequest {
            run_id: id.to_owned(),
            interval: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    let deadline = Duration::from_secs(20);
    while let Some(message) = tokio::time::timeout(deadline, stream.next()).await.unwrap() {
        last = message.unwrap().run;
    }
    last.unwrap()
}

/// The same through SimulatorService: a malformed threshold is
/// INVALID_ARGUMENT naming `spec.thresholds[i]`; a finished run shows each
/// threshold's verdict and value; an `:abort` one stops the run (FAILED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_through_the_simulator_service() {
    let tb = all().await;
    let url = format!("http://{}", tb.addr);
    let sim = Testbed::start(&[
        "sim",
        "--serve",
        "--target",
        &url,
        "--threshold-warmup",
        "500ms",
        "--threshold-window",
        "1s",
    ]);
    sim.wait_serving("testbed.v1.SimulatorService").await;
    let mut client = SimulatorServiceClient::new(sim.channel().await);
    let spec = |id: &str, secs: u64, thresholds: &[&str]| RunSpec {
        run_id: id.to_owned(),
        load: Some(Load::Rate(RateLoad {
            events_per_second: 200.0,
            duration: Some(Duration::from_secs(secs).try_into().unwrap()),
        })),
        devices: 4,
        thresholds: thresholds.iter().map(|t| (*t).to_owned()).collect(),
        ..Default::default()
    };

    for (bad, why) in [
        ("ack_p99<10", "needs a unit"),
        ("verify", "needs verification"),
    ] {
        let status = client
            .start_run(StartRunRequest {
                spec: Some(spec("bad", 1, &["errors<1%", bad])),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let details = status.get_error_details();
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "spec.thresholds[1]");
        assert!(violations[0].description.contains(why), "{violations:?}");
    }

    client
        .start_run(StartRunRequest {
            spec: Some(spec(
                "ends",
                2,
                &["ack_p99<10s", "ack_p99<0.001ms", "achieved>=50%"],
            )),
        })
        .await
        .unwrap();
    let run = final_run(&mut client, "ends").await;
    assert_eq!(run.state(), RunState::Completed, "{run:?}");
    assert_eq!(run.spec.as_ref().unwrap().thresholds.len(), 3);
    let verdicts: Vec<(&str, bool, bool)> = run
        .thresholds
        .iter()
        .map(|t| (t.expression.as_str(), t.passed, t.aborted))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("ack_p99<10s", true, false),
            ("ack_p99<0.001ms", false, false),
            ("achieved>=50%", true, false)
        ]
    );
    assert!(run.thresholds[1].observed > 0.001 && run.thresholds[1].observed_text.ends_with("ms"));
    assert!(run.thresholds[2].observed > 0.5, "{:?}", run.thresholds[2]);

    let started = Instant::now();
    client
        .start_run(StartRunRequest {
            spec: Some(spec("aborts", 30, &["ack_p99<0.001ms:abort"])),
        })
        .await
        .unwrap();
    let run = final_run(&mut client, "aborts").await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(run.state(), RunState::Failed, "{run:?}");
    assert!(
        run.failure_reason
            .contains("threshold ack_p99<0.001ms:abort crossed"),
        "{}",
        run.failure_reason
    );
    assert_eq!(
        (run.thresholds[0].passed, run.thresholds[0].aborted),
        (false, true)
    );
}
