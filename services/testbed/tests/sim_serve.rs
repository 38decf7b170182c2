//! `testbed sim --serve` end to end: runs started, changed, watched and
//! stopped through `testbed.v1.SimulatorService`, sending to a real
//! `testbed all` (embedded log).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::sim_api::{Client, get, start, stop, update};
use common::{Testbed, bad_field};
use testbed_proto::v1::simulator_service_client::SimulatorServiceClient;
use testbed_proto::v1::update_run_request::Change;
use testbed_proto::v1::{
    HoldPhase, Phase, RateLoad, Run, RunSpec, RunState, Scenario, WatchRunRequest, phase,
    run_spec::Load,
};
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_types::StatusExt as _;

/// A `testbed all` to send to, and a `testbed sim --serve` pointed at it.
struct Setup {
    target: Testbed,
    sim: Testbed,
    client: Client,
}

async fn setup(extra: &[&str]) -> Setup {
    let target = Testbed::start(&["all"]);
    target.wait_serving("testbed.v1.IngestService").await;
    let url = format!("http://{}", target.addr);
    // A short achieved-rate window: the rate follows a change within ~1 s.
    let mut args = vec!["sim", "--serve", "--target", &url, "--rate-window", "1s"];
    args.extend_from_slice(extra);
    let sim = Testbed::start(&args);
    sim.wait_serving("testbed.v1.SimulatorService").await;
    let client = SimulatorServiceClient::new(sim.channel().await);
    Setup {
        target,
        sim,
        client,
    }
}

fn secs(s: f64) -> prost_types::Duration {
    Duration::from_secs_f64(s).try_into().unwrap()
}

fn rate_spec(run_id: &str, rate: f64, duration: Option<f64>) -> RunSpec {
    RunSpec {
        run_id: run_id.to_owned(),
        load: Some(Load::Rate(RateLoad {
            events_per_second: rate,
            duration: duration.map(secs),
        })),
        devices: 8,
        ..Default::default()
    }
}

/// Polls GetRun until `done` holds (within `limit`), returning that run.
async fn wait_for(
    client: &mut Client,
    run_id: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&Run) -> bool,
) -> Run {
    let deadline = Instant::now() + limit;
    loop {
        let run = get(client, run_id).await.unwrap();
        if done(&run) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {limit:?}: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn figures(run: &Run) -> &testbed_proto::v1::RunFigures {
    run.figures.as_ref().unwrap()
}

/// A rate run without a duration is RUNNING with a growing events_sent and
/// the contract's defaults filled in, until StopRun cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_rate_run_runs_until_stopped() {
    let Setup {
        target,
        sim: _sim,
        mut client,
    } = setup(&[]).await;
    let started = start(&mut client, rate_spec("open-1", 200.0, None))
        .await
        .unwrap();
    assert_eq!(started.run_id, "open-1");
    assert_eq!(started.state(), RunState::Running);
    assert!(started.start_time.is_some() && started.end_time.is_none());
    let spec = started.spec.as_ref().unwrap();
    assert_eq!(spec.target, format!("http://{}", target.addr));
    assert_eq!((spec.devices, spec.batch_size), (8, 100));
    assert_ne!(spec.seed, 0, "seed 0 is replaced by a random seed");
    assert_eq!(figures(&started).target_rate, 200.0);

    let first = wait_for(
        &mut client,
        "open-1",
        Duration::from_secs(10),
        "events",
        |r| figures(r).events_sent >= 20,
    )
    .await;
    let sent = figures(&first).events_sent;
    let later = wait_for(
        &mut client,
        "open-1",
        Duration::from_secs(10),
        "growth",
        |r| figures(r).events_sent > sent,
    )
    .await;
    assert_eq!(later.state(), RunState::Running);
    assert_eq!(
        figures(&later).current_phase,
        "",
        "no phase for a constant rate"
    );
    assert!(figures(&later).status_codes["OK"] > 0);

    let stopped = stop(&mut client, "open-1").await;
    assert!(
        matches!(stopped.state(), RunState::Stopping | RunState::Cancelled),
        "{stopped:?}"
    );
    let ended = wait_for(
        &mut client,
        "open-1",
        Duration::from_secs(10),
        "CANCELLED",
        |r| r.state() == RunState::Cancelled,
    )
    .await;
    assert!(ended.end_time.is_some());
    assert_eq!(figures(&ended).target_rate, 0.0);
    assert_eq!(figures(&ended).events_accepted, figures(&ended).events_sent);
}

/// UpdateRun changes the target rate at once and the achieved rate
/// follows, on the same run; a scenario then replaces the load, and a
/// finished run can no longer be changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_changes_the_load_without_restarting() {
    let Setup {
        target: _target,
        sim: _sim,
        mut client,
    } = setup(&[]).await;
    let started = start(&mut client, rate_spec("upd-1", 100.0, None))
        .await
        .unwrap();
    let before = wait_for(
        &mut client,
        "upd-1",
        Duration::from_secs(10),
        "100/s",
        |r| (figures(r).achieved_rate - 100.0).abs() <= 10.0,
    )
    .await;

    let updated = update(&mut client, "upd-1", Change::EventsPerSecond(400.0))
        .await
        .unwrap();
    let changed_at = Instant::now();
    assert_eq!(figures(&updated).target_rate, 400.0);
    let seen = wait_for(
        &mut client,
        "upd-1",
        Duration::from_secs(1),
        "target 400",
        |r| figures(r).target_rate == 400.0,
    )
    .await;
    assert!(changed_at.elapsed() < Duration::from_secs(1));
    let Some(Load::Rate(rate)) = seen.spec.as_ref().unwrap().load.as_ref() else {
        panic!("not a rate load: {seen:?}")
    };
    assert_eq!((rate.events_per_second, rate.duration), (400.0, None));
    let after = wait_for(
        &mut client,
        "upd-1",
        Duration::from_secs(10),
        "400/s",
        |r| (figures(r).achieved_rate - 400.0).abs() <= 40.0,
    )
    .await;
    // The same run carried on: same start, counters kept growing.
    assert_eq!(after.start_time, started.start_time);
    assert!(figures(&after).events_sent > figures(&before).events_sent);
    assert_eq!(after.state(), RunState::Running);

    // A scenario replaces the load from its first phase; the run completes
    // at its end.
    let scenario = Scenario {
        name: "short".to_owned(),
        phases: vec![Phase {
            kind: Some(phase::Kind::Hold(HoldPhase {
                rate: 50.0,
                duration: Some(secs(1.0)),
            })),
        }],
    };
    let switched = update(&mut client, "upd-1", Change::Scenario(scenario))
        .await
        .unwrap();
    assert_eq!(figures(&switched).target_rate, 50.0);
    assert_eq!(figures(&switched).current_phase, "short: hold (1/1)");
    let done = wait_for(
        &mut client,
        "upd-1",
        Duration::from_secs(15),
        "COMPLETED",
        |r| r.state() == RunState::Completed,
    )
    .await;
    assert_eq!(figures(&done).events_accepted, figures(&done).events_sent);
    let err = update(&mut client, "upd-1", Change::EventsPerSecond(10.0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let precondition = err.get_details_precondition_failure().unwrap();
    assert_eq!(precondition.violations[0].subject, "runs/upd-1");
}

/// WatchRun streams the run's progress and ends cleanly (OK) after the
/// message showing CANCELLED; StopRun is idempotent throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_until_stopped_and_stop_is_idempotent() {
    let Setup {
        target: _target,
        sim: _sim,
        mut client,
    } = setup(&[]).await;
    start(&mut client, rate_spec("watch-1", 200.0, None))
        .await
        .unwrap();
    let mut stream = client
        .watch_run(WatchRunRequest {
            run_id: "watch-1".to_owned(),
            interval: Some(secs(0.1)),
        })
        .await
        .unwrap()
        .into_inner();
    let mut sent = Vec::new();
    while sent.len() < 5 {
        let run = stream.next().await.unwrap().unwrap().run.unwrap();
        assert_eq!(run.state(), RunState::Running);
        sent.push(figures(&run).events_sent);
    }
    assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
    assert!(sent[4] > sent[0], "events_sent did not grow: {sent:?}");

    let first = stop(&mut client, "watch-1").await;
    let second = stop(&mut client, "watch-1").await;
    for run in [&first, &second] {
        assert!(
            matches!(run.state(), RunState::Stopping | RunState::Cancelled),
            "{run:?}"
        );
    }
    let mut states = Vec::new();
    let mut last = None;
    while let Some(message) = stream.next().await {
        let run = message.expect("the stream ends OK").run.unwrap();
        states.push(run.state());
        last = Some(run);
    }
    let last = last.unwrap();
    assert_eq!(last.state(), RunState::Cancelled, "states seen: {states:?}");
    assert!(
        states[..states.len() - 1]
            .iter()
            .all(|s| matches!(s, RunState::Running | RunState::Stopping)),
        "{states:?}"
    );

    // Stopping an ended run returns it unchanged.
    let again = stop(&mut client, "watch-1").await;
    assert_eq!(again.state(), RunState::Cancelled);
    assert_eq!(again.end_time, last.end_time);
    assert_eq!(figures(&again).events_sent, figures(&last).events_sent);
    // Watching an ended run gives one message, then the end.
    let ended: Vec<_> = client
        .watch_run(WatchRunRequest {
            run_id: "watch-1".to_owned(),
            interval: None,
        })
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(ended.len(), 1);
    assert_eq!(
        ended[0].as_ref().unwrap().run.as_ref().unwrap().state(),
        RunState::Cancelled
    );
}

/// A 1 s run at 200 events/s sends its 200 events, every one accepted, and
/// ends COMPLETED; its id cannot be reused while it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finite_run_completes_with_every_event_accepted() {
    let Setup {
        target: _target,
        sim: _sim,
        mut client,
    } = setup(&[]).await;
    start(&mut client, rate_spec("fin-1", 200.0, Some(1.0)))
        .await
        .unwrap();
    let done = wait_for(
        &mut client,
        "fin-1",
        Duration::from_secs(15),
        "final",
        |r| !matches!(r.state(), RunState::Running | RunState::Stopping),
    )
    .await;
    assert_eq!(done.state(), RunState::Completed, "{done:?}");
    assert_eq!(done.failure_reason, "");
    let f = figures(&done);
    // 100 batches of 2 (about 100 batches a second).
    assert_eq!(f.events_sent, 200);
    assert_eq!(f.events_accepted, f.events_sent);
    assert_eq!((f.events_rejected, f.events_retried), (0, 0));
    assert_eq!(f.status_codes.get("OK"), Some(&100));
    assert_eq!(f.status_codes.len(), 1, "{:?}", f.status_codes);
    let latency = f.ack_latency.as_ref().unwrap();
    let (p50, max) = (latency.p50.unwrap(), latency.max.unwrap());
    assert!(p50.seconds > 0 || p50.nanos > 0, "{latency:?}");
    assert!(
        (max.seconds, max.nanos) >= (p50.seconds, p50.nanos),
        "{latency:?}"
    );

    let err = start(&mut client, rate_spec("fin-1", 10.0, Some(1.0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
}

/// Bad requests are INVALID_ARGUMENT naming the field; unknown runs are
/// NOT_FOUND naming the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field() {
    let Setup {
        target: _target,
        sim: _sim,
        mut client,
    } = setup(&["--max-rate", "10000"]).await;
    for rate in [-1.0, f64::NAN, 0.0, 20_000.0] {
        let err = start(&mut client, rate_spec("", rate, None))
            .await
            .unwrap_err();
        assert_eq!(bad_field(&err), "spec.rate.events_per_second", "{rate}");
    }
    let mut no_load = rate_spec("", 1.0, None);
    no_load.load = None;
    let err = start(&mut client, no_load).await.unwrap_err();
    assert_eq!(bad_field(&err), "spec.load");
    let mut zero_phase = rate_spec("", 1.0, None);
    zero_phase.load = Some(Load::Scenario(Scenario {
        name: String::new(),
        phases: vec![Phase {
            kind: Some(phase::Kind::Hold(HoldPhase {
                rate: 10.0,
                duration: Some(secs(0.0)),
            })),
        }],
    }));
    let err = start(&mut client, zero_phase).await.unwrap_err();
    assert_eq!(bad_field(&err), "spec.scenario.phases[0].hold.duration");
    let err = start(&mut client, rate_spec("no spaces", 1.0, None))
        .await
        .unwrap_err();
    assert_eq!(bad_field(&err), "spec.run_id");

    let err = get(&mut client, "nope").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(
        err.get_details_resource_info().unwrap().resource_name,
        "nope"
    );
    let err = update(&mut client, "nope", Change::EventsPerSecond(5.0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = update(&mut client, "nope", Change::EventsPerSecond(-1.0))
        .await
        .unwrap_err();
    assert_eq!(bad_field(&err), "events_per_second");
    let err = update(&mut client, "nope", Change::EventsPerSecond(f64::NAN))
        .await
        .unwrap_err();
    assert_eq!(bad_field(&err), "events_per_second");
    let err = get(&mut client, "").await.unwrap_err();
    assert_eq!(bad_field(&err), "run_id");
    let err = client
        .watch_run(WatchRunRequest {
            run_id: "nope".to_owned(),
            interval: Some(secs(0.01)),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_field(&err), "interval");
}

/// At --max-runs active runs StartRun is RESOURCE_EXHAUSTED with a retry
/// hint; once a run has ended, a new one starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_runs_are_bounded() {
    let Setup {
        target: _target,
        sim: _sim,
        mut client,
    } = setup(&["--max-runs", "1", "--retry-after", "2s"]).await;
    start(&mut client, rate_spec("max-1", 50.0, None))
        .await
        .unwrap();
    let err = start(&mut client, rate_spec("max-2", 50.0, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(2))
    );
    stop(&mut client, "max-1").await;
    wait_for(
        &mut client,
        "max-1",
        Duration::from_secs(10),
        "CANCELLED",
        |r| r.state() == RunState::Cancelled,
    )
    .await;
    // Without a run_id, the server generates one.
    let second = start(&mut client, rate_spec("", 50.0, None)).await.unwrap();
    assert_eq!(second.state(), RunState::Running);
    assert!(second.run_id.starts_with("run-"), "{}", second.run_id);
    assert_eq!(second.spec.as_ref().unwrap().run_id, second.run_id);
    assert_eq!(
        stop(&mut client, &second.run_id).await.run_id,
        second.run_id
    );
}
