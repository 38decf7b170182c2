//! One repetition of the selected steps, in order: each step is a set of
//! probes (see [`crate::probe`]) whose rates derive from the saturation
//! rate of the same repetition, but the recovery and failover steps',
//! which run at fixed rates (see [`crate::recovery`], [`crate::failover`]),
//! and the query-scale step's, which fills fleets (see [`crate::query_scale`]),
//! and the cold-start and k6 steps', which need no rate (see
//! [`crate::cold_start`], [`crate::k6_compare`]).

use std::time::{Duration, Instant};

use crate::ceiling::{self, CeilingOptions};
use crate::cli::Step;
use crate::cold_start::{self, ColdStartOptions};
use crate::error::Result;
use crate::failover::{self, FailoverOptions};
use crate::instructions::{self, InstructionsOptions};
use crate::k6_compare::{self, K6Options};
use crate::pipeline::Topology;
use crate::probe::{self, ProbeEnv, ProbeSpec, Target};
use crate::query_scale::{self, QueryScaleOptions};
use crate::recovery::{self, RecoveryOptions};
use crate::redis::Redis;
use crate::results::ProbeResult;
use crate::results::{Level, RunResult, Saturation};
use crate::search::{Search, SearchOptions};

/// Settings of the steps beyond what every probe shares.
#[derive(Debug, Clone)]
pub struct StepOptions {
    /// Steps to run.
    pub steps: Vec<Step>,
    /// `redis-benchmark`.
    pub redis_benchmark: std::path::PathBuf,
    /// Ceiling: `-n`, `-P`, `-c`, fields.
    pub ceiling: (u64, u32, u32, usize),
    /// The search.
    pub search: SearchOptions,
    /// No new search probe after this long.
    pub search_budget: Duration,
    /// A given saturation rate (no search needed).
    pub saturation_rate: Option<f64>,
    /// Latency fractions.
    pub latency_levels: Vec<f64>,
    /// Footprint fraction, and idle period.
    pub footprint: (f64, Duration),
    /// Sampling ratios compared with OTLP off, the fraction offered, and
    /// the rounds (each runs every mode once).
    pub telemetry: (Vec<f64>, f64, u32),
    /// Monolithic fractions.
    pub monolithic_levels: Vec<f64>,
    /// Stub multiples.
    pub stub_multiples: Vec<f64>,
    /// The recovery step.
    pub recovery: RecoveryOptions,
    /// The failover step.
    pub failover: FailoverOptions,
    /// The query-scale step.
    pub query_scale: QueryScaleOptions,
    /// The cold-start step.
    pub cold_start: ColdStartOptions,
    /// The k6 step.
    pub k6: K6Options,
    /// The instructions step.
    pub instructions: InstructionsOptions,
}

/// Runs one repetition; `notes` collects what could not run.
pub async fn run_repetition(
    o: &StepOptions,
    env: &ProbeEnv,
    rep: u32,
    notes: &mut Vec<String>,
) -> Result<RunResult> {
    let started = Instant::now();
    let env = ProbeEnv {
        work: env.work.join(format!("rep{rep}")),
        ..env.clone()
    };
    let has = |s: Step| o.steps.contains(&s);
    let mut r = RunResult::default();

    if has(Step::Ceiling) {
        let redis =
            Redis::start(&env.pipeline.redis_server, &env.work.join("ceiling/redis")).await?;
        let (requests, pipeline, clients, fields) = o.ceiling;
        let measured = ceiling::measure(CeilingOptions {
            redis_benchmark: &o.redis_benchmark,
            port: redis.port,
            entry: ceiling::event_shape(fields, 10_000),
            requests,
            pipeline,
            clients,
            log: &env.work.join("ceiling/redis-benchmark.log"),
        })
        .await;
        redis.stop().await?;
        let measured = measured?;
        tracing::info!(
            xadd_per_sec = measured.xadd_per_sec,
            entry_bytes = measured.entry.mean_encoded_bytes,
            "ceiling"
        );
        r.ceiling = Some(measured);
    }

    if has(Step::Saturation) {
        let mut sat = search(o, &env, rep).await?;
        if let (Some(rate), Some(c)) = (sat.sustained_rate, &r.ceiling) {
            sat.ratio_to_ceiling = Some(rate / c.xadd_per_sec);
        }
        r.saturation = Some(sat);
    }
    r.reference_rate = o
        .saturation_rate
        .or(r.saturation.as_ref().and_then(|s| s.sustained_rate));

    let dependent = [
        Step::Latency,
        Step::Footprint,
        Step::Telemetry,
        Step::Monolithic,
        Step::Simulator,
    ];
    match r.reference_rate {
        Some(rate) => dependent_steps(o, &env, rep, rate, &mut r).await?,
        None if dependent.iter().any(|s| has(*s)) => notes.push(format!(
            "repetition {rep}: no saturation rate (search not run or nothing sustained, and no \
             --saturation-rate): latency, footprint, telemetry, monolithic and simulator skipped"
        )),
        None => {}
    }

    if has(Step::Recovery) {
        let label = format!("rep{rep}-recovery-{:.0}", o.recovery.rate);
        r.recovery = Some(recovery::run(&env, &o.recovery, label).await?);
    }
    if has(Step::Failover) {
        let label = format!("rep{rep}-failover-{:.0}", o.failover.rate);
        r.failover = Some(failover::run(&env, &o.failover, &label).await?);
    }
    if has(Step::QueryScale) {
        let label = format!("rep{rep}-query-scale");
        r.query_scale = Some(query_scale::run(&env, &o.query_scale, &label).await?);
    }
    if has(Step::ColdStart) {
        let p = &env.pipeline;
        let work = env.work.join("cold-start");
        r.cold_start =
            Some(cold_start::run(&p.testbed, &p.redis_server, &work, &o.cold_start).await?);
    }
    if has(Step::K6) {
        let work = env.work.join("k6");
        let k6 = k6_compare::run(&env.pipeline.testbed, &env.self_exe, &work, &o.k6).await?;
        notes.extend(
            k6.notes
                .iter()
                .filter(|n| n.starts_with("not measured"))
                .map(|n| format!("repetition {rep}: k6 {n}")),
        );
        r.k6 = Some(k6);
    }
    if has(Step::Instructions) {
        match o.instructions.tools.check() {
            Ok(valgrind) => {
                let label = format!("rep{rep}-instructions");
                let m = instructions::run(&env, &o.instructions, &label, valgrind).await?;
                r.instructions = Some(m);
            }
            Err(why) => notes.push(format!("repetition {rep}: instructions skipped: {why}")),
        }
    }
    r.wall_s = started.elapsed().as_secs_f64();
    Ok(r)
}

/// The steps whose rates are fractions of the saturation `rate`.
async fn dependent_steps(
    o: &StepOptions,
    env: &ProbeEnv,
    rep: u32,
    rate: f64,
    r: &mut RunResult,
) -> Result<()> {
    let has = |s: Step| o.steps.contains(&s);
    let split = Target::Pipeline(Topology::Split);
    let spec = |label: String, rate: f64, target: Target| ProbeSpec {
        label: format!("rep{rep}-{label}"),
        rate,
        target,
        sampling: None,
        idle: None,
    };

    if has(Step::Latency) {
        let (mut levels, mut floor) = (Vec::new(), Vec::new());
        for f in &o.latency_levels {
            let p = probe::run(env, &spec(format!("latency-{f}"), rate * f, split)).await?;
            levels.push(Level {
                fraction: *f,
                probe: p,
            });
            // The same load against the acking stub: the share of the
            // simulator, gRPC and this host in the latency above.
            let stub = spec(format!("latency-floor-{f}"), rate * f, Target::Stub);
            floor.push(Level {
                fraction: *f,
                probe: probe::run(env, &stub).await?,
            });
        }
        r.latency = Some(levels);
        r.latency_floor = Some(floor);
    }

    if has(Step::Footprint) {
        let (f, idle) = o.footprint;
        let mut s = spec(format!("footprint-{f}"), rate * f, split);
        s.idle = Some(idle);
        r.footprint = Some(Level {
            fraction: f,
            probe: probe::run(env, &s).await?,
        });
    }

    if has(Step::Telemetry) {
        let (ratios, f, rounds) = &o.telemetry;
        let modes: Vec<Option<f64>> = std::iter::once(None)
            .chain(ratios.iter().copied().map(Some))
            .collect();
        let mut probes = Vec::new();
        for round in 0..*rounds as usize {
            // Rotated each round, so no mode always runs first or last.
            for i in 0..modes.len() {
                let sampling = modes[(i + round) % modes.len()];
                let name = sampling.map_or_else(|| "off".to_owned(), |x| x.to_string());
                let mut s = spec(
                    format!("telemetry-{name}-{f}-r{}", round + 1),
                    rate * f,
                    split,
                );
                s.sampling = sampling;
                let mut p = probe::run(env, &s).await?;
                p.round = Some(round as u32 + 1);
                probes.push(p);
            }
        }
        r.telemetry = Some(probes);
    }

    if has(Step::Monolithic) {
        let mut mono = Vec::new();
        let mut extra = Vec::new();
        for f in &o.monolithic_levels {
            let target = Target::Pipeline(Topology::Monolithic);
            let p = probe::run(env, &spec(format!("monolithic-{f}"), rate * f, target)).await?;
            mono.push(Level {
                fraction: *f,
                probe: p,
            });
            let measured = r
                .latency
                .as_ref()
                .is_some_and(|l| l.iter().any(|l| (l.fraction - f).abs() < 1e-9));
            if !measured {
                let p = probe::run(env, &spec(format!("split-{f}"), rate * f, split)).await?;
                extra.push(Level {
                    fraction: *f,
                    probe: p,
                });
            }
        }
        r.monolithic = Some(mono);
        r.split_extra = Some(extra);
    }

    if has(Step::Simulator) {
        let mut levels = Vec::new();
        for m in &o.stub_multiples {
            let p = probe::run(env, &spec(format!("stub-x{m}"), rate * m, Target::Stub)).await?;
            let sustained = p.sustained;
            levels.push(Level {
                fraction: *m,
                probe: p,
            });
            if !sustained {
                break;
            }
        }
        r.simulator = Some(levels);
    }
    Ok(())
}

/// The saturation search of one repetition.
async fn search(o: &StepOptions, env: &ProbeEnv, rep: u32) -> Result<Saturation> {
    let started = Instant::now();
    let mut s = Search::new(o.search);
    let mut probes: Vec<ProbeResult> = Vec::new();
    let stopped_by = loop {
        let Some(rate) = s.next() else {
            break if s.probes() >= o.search.max_probes {
                "max-probes"
            } else if s.best().is_some_and(|b| b >= o.search.max) {
                "max-rate"
            } else if s.best().is_none() {
                "floor"
            } else {
                "precision"
            };
        };
        if started.elapsed() >= o.search_budget {
            break "budget";
        }
        let label = format!("rep{rep}-saturation-{:02}-{rate:.0}", probes.len() + 1);
        let p = probe::run(
            env,
            &ProbeSpec {
                label,
                rate,
                target: Target::Pipeline(Topology::Split),
                sampling: None,
                idle: None,
            },
        )
        .await?;
        s.record(rate, p.sustained);
        probes.push(p);
    };
    tracing::info!(
        best = s.best(),
        failed = s.failed(),
        probes = s.probes(),
        stopped_by,
        "saturation search done"
    );
    Ok(Saturation {
        sustained_rate: s.best(),
        failed_rate: s.failed(),
        ratio_to_ceiling: None,
        stopped_by: stopped_by.to_owned(),
        probes,
    })
}
