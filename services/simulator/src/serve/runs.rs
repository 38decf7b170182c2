//! The runs a `testbed sim --serve` process knows: their life cycle
//! (RUNNING → STOPPING → CANCELLED, or RUNNING → COMPLETED/FAILED), the
//! load each follows, and the bounds on how many run and are kept.
//!
//! Each run is two tasks: the runner ([`runner::run_live`]) and its
//! driver, which samples the accepted rate and records the final state
//! when the runner returns (a panic in the runner becomes FAILED, not a
//! lost run). Every run's token is a child of the server's shutdown token,
//! and [`Runs::wait_stopped`] awaits the drivers, so no run outlives the
//! server unnoticed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use testbed_proto::v1 as pb;
use testbed_server::CancellationToken;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::load::allow::{AllowList, Refusal};
use crate::load::fleet::Fleet;
use crate::load::runner::{self, Progress, SendOptions, Shared};
use crate::load::scenario::Scenario;
use crate::load::stats::RunFigures;
use crate::load::transport::{self, ConnectError};
use crate::serve::config::{Limits, ServeConfig};
use crate::serve::error::ApiError;
use crate::serve::live::{self, LoadClock, RateWindow};
use crate::serve::spec::{self, Change, StartSpec};
use crate::thresholds::live::LiveCheck;
use crate::thresholds::{self, Observed, Outcome, Threshold};

/// How many samples of the accepted counter a rate window holds.
const SAMPLES_PER_WINDOW: u32 = 12;

/// The runs of this server; cheap to clone.
#[derive(Debug, Clone)]
pub struct Runs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ServeConfig,
    /// The server's token: cancelled at shutdown, it stops every run.
    shutdown: CancellationToken,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    runs: HashMap<String, Entry>,
    /// Ids of finished runs, oldest first: the first forgotten.
    finished: VecDeque<String>,
    /// Runs not in a final state (bounded by `--max-runs`).
    active: usize,
}

#[derive(Debug)]
struct Entry {
    /// The run; once it has ended, with its final figures.
    run: pb::Run,
    /// What a run needs while it is not in a final state; dropped at the
    /// end (the latency histograms are the bulk of a run's memory).
    live: Option<Live>,
    /// The run as of its last change of state, for WatchRun.
    changes: watch::Sender<pb::Run>,
}

#[derive(Debug)]
struct Live {
    figures: Shared,
    load: LoadClock,
    /// The end of a constant-rate load with a duration; kept when its rate
    /// changes.
    deadline: Option<Instant>,
    rate: RateWindow,
    scenario: watch::Sender<Scenario>,
    cancel: CancellationToken,
    driver: Option<JoinHandle<()>>,
    /// The highest rate the current load asks for (`--max-total-rate`
    /// sums these).
    peak: f64,
    /// Start + `--max-run-duration`: no load goes on past it.
    hard_end: Instant,
    /// The events its load asked for so far, for the `achieved` threshold.
    offered: Offered,
    /// Checked when the run ends (`:abort` ones also live, by the runner's
    /// task).
    thresholds: Vec<Threshold>,
}

/// The events a run's loads asked for: each load's schedule up to when
/// it was replaced (UpdateRun) or stopped, exactly.
#[derive(Debug, Clone, Copy)]
struct Offered {
    /// When the run's schedule started.
    started: Instant,
    /// The events of the loads replaced so far.
    before: f64,
}

impl Offered {
    /// The events `load` asked for until `until`, plus those before it.
    fn total(&self, load: &LoadClock, until: Instant) -> f64 {
        let length = until.saturating_duration_since(load.since);
        self.before + load.scenario.truncated(length).planned_events()
    }
}

/// Whether `state` is final (COMPLETED, FAILED or CANCELLED).
pub fn is_final(state: pb::RunState) -> bool {
    matches!(
        state,
        pb::RunState::Completed | pb::RunState::Failed | pb::RunState::Cancelled
    )
}

fn lock(figures: &Shared) -> MutexGuard<'_, RunFigures> {
    figures.lock().unwrap_or_else(|p| p.into_inner())
}

impl Entry {
    /// The run with its figures as of `now`.
    fn snapshot(&self, now: Instant) -> pb::Run {
        let Some(live) = &self.live else {
            return self.run.clone();
        };
        let figures = lock(&live.figures);
        let (target, phase) = if self.run.state() == pb::RunState::Running {
            live.load.at(now)
        } else {
            (0.0, String::new())
        };
        let achieved = live.rate.rate(now, figures.total.accepted);
        pb::Run {
            figures: Some(live::figures(&figures.total, target, achieved, phase)),
            ..self.run.clone()
        }
    }

    fn set_state(&mut self, state: pb::RunState, now: Instant) {
        self.run.set_state(state);
        self.changes.send_replace(self.snapshot(now));
    }
}

/// The live parts of a run that can still change (PENDING or RUNNING).
/// Takes the entry's fields apart, so that its spec can change alongside.
fn changeable<'a>(
    run: &pb::Run,
    live: &'a mut Option<Live>,
    id: &str,
) -> Result<&'a mut Live, ApiError> {
    let state = run.state();
    match live {
        Some(live) if matches!(state, pb::RunState::Pending | pb::RunState::Running) => Ok(live),
        _ => Err(ApiError::Ended {
            id: id.to_owned(),
            state: state.as_str_name(),
        }),
    }
}

impl Runs {
    /// No runs yet; runs stop when `shutdown` is cancelled.
    pub fn new(config: ServeConfig, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                shutdown,
                table: Mutex::new(Table::default()),
            }),
        }
    }

    /// What a run may ask for.
    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `target` (named by `field`) against the allow-list, after DNS
    /// resolution, and the connections a run to it would open against
    /// `--max-run-connections`. Returns the allow-list when the run's channels
    /// must keep checking the addresses a `dns:///` target resolves to (it
    /// was allowed for its addresses, not by name).
    pub async fn admit_target(
        &self,
        field: &str,
        target: &str,
    ) -> Result<Option<AllowList>, ApiError> {
        let config = &self.inner.config;
        let not_allowed = |address: Option<String>| ApiError::TargetNotAllowed {
            field: field.to_owned(),
            target: target.to_owned(),
            address,
        };
        let allowed = config
            .allow
            .check(target)
            .await
            .map_err(|refusal| match refusal {
                Refusal::NotListed => not_allowed(None),
                Refusal::Resolved(addr) => not_allowed(Some(addr.to_string())),
                Refusal::Unresolved(reason) => ApiError::Unavailable(format!(
                    "cannot resolve {target} to check it against the allow-list: {reason}"
                )),
            })?;
        // Each channel of a dns:/// target connects to every address.
        let addresses = match (target.starts_with("dns:///"), allowed.addresses.len()) {
            (false, _) => 1,
            (true, 0) => transport::endpoints(target)
                .await
                .map_err(|err| ApiError::Unavailable(err.to_string()))?
                .len(),
            (true, n) => n,
        };
        let connections = addresses.saturating_mul(config.connections.max(1) as usize);
        let max = config.limits.max_connections as usize;
        if connections > max {
            return Err(ApiError::invalid(
                field,
                format!(
                    "{addresses} address(es) x {} connections each = {connections} connections, above this server's limit of {max} per run (--max-run-connections)",
                    config.connections
                ),
            ));
        }
        let by_address = target.starts_with("dns:///") && !allowed.addresses.is_empty();
        Ok(by_address.then(|| config.allow.clone()))
    }

    /// The sum of the peak rates of the active runs but `except`.
    fn active_rate(table: &Table, except: Option<&str>) -> f64 {
        table
            .runs
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != except)
            .filter_map(|(_, e)| e.live.as_ref())
            .filter(|live| !live.cancel.is_cancelled())
            .map(|live| live.peak)
            .sum()
    }

    /// Refuses a load whose peak would take the active runs' total above
    /// `--max-total-rate`.
    fn within_total(&self, active: f64, peak: f64, field: &str) -> Result<(), ApiError> {
        let config = &self.inner.config;
        if active + peak > config.limits.max_total_rate {
            return Err(ApiError::TotalRateExceeded {
                field: field.to_owned(),
                requested: peak,
                active,
                max: config.limits.max_total_rate,
                retry_after: config.retry_after,
            });
        }
        Ok(())
    }

    /// The run's target, for a check before a change.
    pub fn target_of(&self, id: &str) -> Result<String, ApiError> {
        let table = self.table();
        let entry = table
            .runs
            .get(id)
            .ok_or_else(|| ApiError::NotFound(id.to_owned()))?;
        Ok(entry
            .run
            .spec
            .as_ref()
            .map(|s| s.target.clone())
            .unwrap_or_default())
    }

    /// Checks `spec`, starts the run and returns it (RUNNING).
    pub async fn start(&self, spec: Option<pb::RunSpec>) -> Result<pb::Run, ApiError> {
        let config = &self.inner.config;
        // Where first, then how much: a target off the allow-list is
        // PERMISSION_DENIED whatever else the request asks, and is never
        // connected to.
        let target = match spec.as_ref().map(|s| s.target.as_str()) {
            None | Some("") => config.target.clone(),
            Some(target) => transport::parse_target(target)
                .map_err(|reason| ApiError::invalid("spec.target", reason))?,
        };
        let guard = self.admit_target("spec.target", &target).await?;
        let StartSpec {
            mut spec,
            load,
            mix,
            thresholds,
        } = spec::start(spec, &config.limits)?;
        spec.target = target;
        if spec.run_id.is_empty() {
            let secs = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            spec.run_id = format!("run-{secs}-{:08x}", rand::random::<u32>());
        }
        // Lazy channels: only a dns:/// target is resolved here. The TLS
        // files are read again for each run (rotation).
        let tls = config.tls.as_ref().map(|tls| tls.current());
        let channels =
            transport::guarded_channels(&spec.target, config.connections, guard, tls.as_ref())
                .await
                .map_err(|err| match err {
                    ConnectError::Invalid { reason, .. } => {
                        ApiError::invalid("spec.target", reason)
                    }
                    ConnectError::Resolve { .. } => ApiError::Unavailable(err.to_string()),
                })?;

        let id = spec.run_id.clone();
        let now = Instant::now();
        let hard_end = now + config.limits.max_run_duration;
        let (scenario, deadline) = match &load {
            // Until stopped, but not past --max-run-duration.
            spec::Load::Rate {
                rate,
                duration: None,
            } => (
                Scenario::steady(*rate, config.limits.max_run_duration),
                Some(hard_end),
            ),
            spec::Load::Rate {
                duration: Some(d), ..
            } => (load.scenario(), Some(now + *d)),
            spec::Load::Scenario(_) => (load.scenario(), None),
        };
        let peak = scenario.peak_rate();
        let rate_field = match &load {
            spec::Load::Rate { .. } => "spec.rate.events_per_second",
            spec::Load::Scenario(_) => "spec.scenario.phases",
        };
        let mut table = self.table();
        if self.inner.shutdown.is_cancelled() {
            return Err(ApiError::Unavailable(
                "the simulator is shutting down".to_owned(),
            ));
        }
        if table.runs.contains_key(&id) {
            return Err(ApiError::AlreadyExists(id));
        }
        if table.active >= config.max_runs {
            return Err(ApiError::TooManyRuns {
                max: config.max_runs,
                retry_after: config.retry_after,
            });
        }
        self.within_total(Self::active_rate(&table, None), peak, rate_field)?;
        // Totals only: phases change with UpdateRun, and each phase would
        // hold a latency histogram of its own.
        let figures: Shared = Arc::new(Mutex::new(RunFigures::new(0)));
        let cancel = self.inner.shutdown.child_token();
        let (scenario_tx, scenario_rx) = watch::channel(scenario.clone());
        let options = SendOptions {
            streams: config.streams,
            unary: config.unary,
            max_retries: config.max_retries,
            max_batch: spec.batch_size,
            producer_id: runner::producer_id(&id),
            drain: config.drain,
            // Streams to a headless Service are recycled so new pods get load.
            stream_max_age: spec
                .target
                .starts_with("dns:///")
                .then_some(Duration::from_secs(30)),
            token: config.token.clone(),
        };
        let (devices, seed, prefix, arch_mix) = (
            spec.devices,
            spec.seed,
            config.device_prefix.clone(),
            config.arch_mix.clone(),
        );
        let live_settings = config.live_thresholds;
        let runner = {
            let (id, figures, cancel) = (id.clone(), figures.clone(), cancel.clone());
            let thresholds = thresholds.clone();
            tokio::spawn(async move {
                // Built here, off the request path: a large fleet takes a while.
                let fleet = Fleet::new(devices, &prefix, &arch_mix, mix, seed, &id);
                let progress = Arc::new(Mutex::new(Progress::default()));
                // A crossed `:abort` threshold stops the schedule through
                // a token of its own, so the run ends FAILED, not CANCELLED.
                let abort = cancel.child_token();
                let watcher =
                    LiveCheck::new(&thresholds, live_settings, Instant::now()).map(|check| {
                        let progress = progress.clone();
                        let rate =
                            move || progress.lock().map(|p| p.target_rate).unwrap_or_default();
                        thresholds::live::spawn(check, figures.clone(), rate, abort.clone())
                    });
                let scheduled = runner::run_live(
                    scenario_rx,
                    fleet,
                    channels,
                    options,
                    figures,
                    progress,
                    abort,
                )
                .await;
                let aborted = match watcher {
                    Some(watcher) => watcher.finish().await,
                    None => None,
                };
                (scheduled, aborted)
            })
        };
        let driver = tokio::spawn(self.clone().drive(id.clone(), runner, figures.clone()));
        let run = pb::Run {
            run_id: id.clone(),
            spec: Some(spec.clone()),
            state: pb::RunState::Running.into(),
            start_time: Some(SystemTime::now().into()),
            ..Default::default()
        };
        let (changes, _) = watch::channel(run.clone());
        let entry = Entry {
            run,
            live: Some(Live {
                figures,
                load: LoadClock {
                    scenario,
                    since: now,
                    constant: matches!(load, spec::Load::Rate { .. }),
                },
                deadline,
                rate: RateWindow::new(config.rate_window, now),
                offered: Offered {
                    started: now,
                    before: 0.0,
                },
                thresholds,
                scenario: scenario_tx,
                cancel,
                driver: Some(driver),
                peak,
                hard_end,
            }),
            changes,
        };
        let run = entry.snapshot(now);
        table.runs.insert(id.clone(), entry);
        table.active += 1;
        tracing::info!(
            run_id = id, target = spec.target, devices = spec.devices,
            batch_size = spec.batch_size, seed = spec.seed, load = ?load,
            active = table.active, "sim run started"
        );
        Ok(run)
    }

    /// Follows the runner: samples the accepted rate until it returns, then
    /// records the final state.
    async fn drive(
        self,
        id: String,
        mut runner: JoinHandle<(Duration, Option<Outcome>)>,
        figures: Shared,
    ) {
        let every = self.inner.config.rate_window / SAMPLES_PER_WINDOW;
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let joined = loop {
            tokio::select! {
                joined = &mut runner => break joined,
                _ = ticker.tick() => {
                    let accepted = lock(&figures).total.accepted;
                    if let Some(live) = self.table().runs.get_mut(&id).and_then(|e| e.live.as_mut()) {
                        live.rate.record(Instant::now(), accepted);
                    }
                }
            }
        };
        match joined {
            Ok((scheduled, aborted)) => self.finish(&id, Some((scheduled, aborted))),
            Err(err) => {
                tracing::error!(run_id = id, error = %err, "sim runner stopped unexpectedly");
                self.finish(&id, None);
            }
        }
    }

    /// Records the final state of a run whose runner has returned, and
    /// forgets the oldest finished runs beyond `--keep-finished`.
    fn finish(&self, id: &str, ended: Option<(Duration, Option<Outcome>)>) {
        let panicked = ended.is_none();
        let (scheduled, aborted) = ended.unwrap_or_default();
        let config = &self.inner.config;
        let now = Instant::now();
        let mut table = self.table();
        let Some(entry) = table.runs.get_mut(id) else {
            return;
        };
        let Some(mut live) = entry.live.take() else {
            return;
        };
        let thresholds;
        let (state, reason, run_figures) = {
            let figures = lock(&live.figures);
            let t = &figures.total;
            live.rate.record(now, t.accepted);
            let achieved = live.rate.rate(now, t.accepted);
            let unacknowledged = t.sent.saturating_sub(t.accepted + t.rejected + t.failed);
            // Held to what the schedule asked for while it ran.
            let secs = scheduled.as_secs_f64().max(1e-9);
            let offered = live
                .offered
                .total(&live.load, live.offered.started + scheduled);
            let observed = Observed::of(t, offered / secs, t.accepted as f64 / secs);
            thresholds = live
                .thresholds
                .iter()
                .map(|th| match &aborted {
                    Some(crossed) if crossed.expression == th.expression => crossed.clone(),
                    _ => Outcome::check(th, &observed),
                })
                .map(|o| pb::Threshold {
                    expression: o.expression,
                    observed: o.observed,
                    observed_text: o.observed_text,
                    passed: o.passed,
                    aborted: o.aborted,
                })
                .collect();
            let (state, reason) = if panicked {
                let reason = "internal error: the run's scheduler stopped; see the server log";
                (pb::RunState::Failed, reason.to_owned())
            } else if let Some(crossed) = &aborted {
                let reason = format!(
                    "threshold {} crossed (observed {} over the last --threshold-window): the run was stopped",
                    crossed.expression, crossed.observed_text
                );
                (pb::RunState::Failed, reason)
            } else if live.cancel.is_cancelled() {
                (pb::RunState::Cancelled, String::new())
            } else if t.failed > 0 {
                let reason = format!(
                    "{} events were never accepted (status codes: {:?})",
                    t.failed, t.status_codes
                );
                (pb::RunState::Failed, reason)
            } else if unacknowledged > 0 {
                let reason = format!(
                    "{unacknowledged} events were still unacknowledged after the drain timeout ({})",
                    humantime::format_duration(config.drain)
                );
                (pb::RunState::Failed, reason)
            } else {
                (pb::RunState::Completed, String::new())
            };
            // A final run asks for nothing; its achieved rate is the one
            // it ended with.
            (
                state,
                reason,
                live::figures(t, 0.0, achieved, String::new()),
            )
        };
        tracing::info!(
            run_id = id,
            state = state.as_str_name(),
            sent = run_figures.events_sent,
            accepted = run_figures.events_accepted,
            reason,
            "sim run ended"
        );
        entry.run.end_time = Some(SystemTime::now().into());
        entry.run.failure_reason = reason;
        entry.run.figures = Some(run_figures);
        entry.run.thresholds = thresholds;
        entry.set_state(state, now);
        table.active = table.active.saturating_sub(1);
        table.finished.push_back(id.to_owned());
        while table.finished.len() > config.keep_finished {
            if let Some(old) = table.finished.pop_front() {
                table.runs.remove(&old);
            }
        }
    }

    /// The run with its current figures.
    pub fn get(&self, id: &str) -> Result<pb::Run, ApiError> {
        let table = self.table();
        let entry = table
            .runs
            .get(id)
            .ok_or_else(|| ApiError::NotFound(id.to_owned()))?;
        Ok(entry.snapshot(Instant::now()))
    }

    /// The run now, and a receiver of the run as of each change of state.
    pub fn watch(&self, id: &str) -> Result<(pb::Run, watch::Receiver<pb::Run>), ApiError> {
        let table = self.table();
        let entry = table
            .runs
            .get(id)
            .ok_or_else(|| ApiError::NotFound(id.to_owned()))?;
        Ok((entry.snapshot(Instant::now()), entry.changes.subscribe()))
    }

    /// Switches a running run to a new load, from now on. Its target is
    /// checked against the allow-list again (what a name resolves to may
    /// have changed since StartRun).
    pub async fn update(&self, id: &str, change: Change) -> Result<pb::Run, ApiError> {
        use pb::run_spec::Load as PbLoad;
        let target = self.target_of(id)?;
        self.admit_target("run.spec.target", &target).await?;
        let now = Instant::now();
        let mut table = self.table();
        let others = Self::active_rate(&table, Some(id));
        let entry = table
            .runs
            .get_mut(id)
            .ok_or_else(|| ApiError::NotFound(id.to_owned()))?;
        let live = changeable(&entry.run, &mut entry.live, id)?;
        let remaining = live.hard_end.saturating_duration_since(now);
        let (peak, field) = match &change {
            Change::Rate(rate) => (*rate, "events_per_second"),
            Change::Scenario(s, _) => {
                if s.duration() > remaining {
                    return Err(ApiError::invalid(
                        "scenario.phases",
                        format!(
                            "last {}, past this run's end at --max-run-duration ({} from now)",
                            humantime::format_duration(s.duration()),
                            humantime::format_duration(Duration::from_secs(remaining.as_secs()))
                        ),
                    ));
                }
                (s.peak_rate(), "scenario.phases")
            }
        };
        self.within_total(others, peak, field)?;
        live.peak = peak;
        let spec = entry.run.spec.get_or_insert_with(Default::default);
        let scenario = match change {
            Change::Rate(rate) => {
                // A rate run keeps its end; a scenario run holds the rate
                // until stopped.
                let duration = match (&spec.load, live.deadline) {
                    (Some(PbLoad::Rate(old)), deadline) => {
                        spec.load = Some(PbLoad::Rate(pb::RateLoad {
                            events_per_second: rate,
                            duration: old.duration,
                        }));
                        deadline.map_or(remaining, |d| d.saturating_duration_since(now))
                    }
                    _ => {
                        spec.load = Some(PbLoad::Rate(pb::RateLoad {
                            events_per_second: rate,
                            duration: None,
                        }));
                        // Until stopped, but not past --max-run-duration.
                        live.deadline = Some(live.hard_end);
                        remaining
                    }
                };
                live.load.constant = true;
                Scenario::steady(rate, duration)
            }
            Change::Scenario(scenario, proto) => {
                spec.load = Some(PbLoad::Scenario(proto));
                live.deadline = None;
                live.load.constant = false;
                scenario
            }
        };
        tracing::info!(run_id = id, load = ?scenario, "sim run updated");
        live.offered.before = live.offered.total(&live.load, now);
        live.load.scenario = scenario.clone();
        live.load.since = now;
        live.scenario.send_replace(scenario);
        Ok(entry.snapshot(now))
    }

    /// Stops a run (STOPPING, then CANCELLED once its batches in flight are
    /// done); a run already stopping or ended is returned unchanged.
    pub fn stop(&self, id: &str) -> Result<pb::Run, ApiError> {
        let now = Instant::now();
        let mut table = self.table();
        let entry = table
            .runs
            .get_mut(id)
            .ok_or_else(|| ApiError::NotFound(id.to_owned()))?;
        if let Ok(live) = changeable(&entry.run, &mut entry.live, id) {
            live.cancel.cancel();
            entry.set_state(pb::RunState::Stopping, now);
            tracing::info!(run_id = id, "sim run stopping");
        }
        Ok(entry.snapshot(now))
    }

    /// Waits until every run has ended (after shutdown has cancelled them).
    pub async fn wait_stopped(&self) {
        loop {
            let drivers: Vec<JoinHandle<()>> = self
                .table()
                .runs
                .values_mut()
                .filter_map(|e| e.live.as_mut()?.driver.take())
                .collect();
            if drivers.is_empty() {
                return;
            }
            for driver in drivers {
                if let Err(err) = driver.await {
                    tracing::error!(error = %err, "sim run driver stopped unexpectedly");
                }
            }
        }
    }
}
