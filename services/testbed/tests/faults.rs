//! The fault suite: simulator load on real processes (ingest, worker,
//! query, each its own `testbed` process on one Redis), faults injected
//! while it runs, then `sim --verify` and the pipeline's own figures must
//! show every accepted event processed exactly once (or dead-lettered, and
//! named so). Among the faults: a worker SIGKILLed while its EXEC (single
//! Redis) or its apply script (Redis Cluster) waits on a paused Redis.
//! Each test prints the figures it checked (on stderr: the
//! test command runs this suite with `--nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Testbed;
use common::sim::{Finished, Sim, sum};
use testbed_proto::v1::worker_control_service_client::WorkerControlServiceClient;
use testbed_proto::v1::{FailureFault, Fault, FaultScope, InjectFaultRequest, fault::Effect};
use testbed_stream::{AnyLog, EventLog as _, RedisLog, StoreArgs};
use testbed_test_support::{RedisCluster, RedisServer};

/// Ingest, worker and query, each a process on `redis`; the worker gets
/// `worker_flags` besides a 100 ms control interval (faults apply fast).
struct Split {
    ingest: Testbed,
    worker: Testbed,
    query: Testbed,
    log: AnyLog,
    /// The store flags every process was given.
    store: Vec<String>,
}

impl Split {
    async fn start(redis: &RedisServer, worker_flags: &[&str]) -> Self {
        Self::start_with(redis, &[], worker_flags).await
    }

    /// [`Split::start`] with `common` flags for all three.
    async fn start_with(redis: &RedisServer, common: &[&str], worker_flags: &[&str]) -> Self {
        Self::start_on(&redis.url(), false, common, worker_flags).await
    }

    /// [`Split::start_with`] on the Redis (or, with `cluster`, the Redis
    /// Cluster seeds) at `url`.
    async fn start_on(url: &str, cluster: bool, common: &[&str], worker_flags: &[&str]) -> Self {
        let mut store = vec!["--redis-url", url];
        if cluster {
            store.push("--redis-cluster");
        }
        let ingest = Testbed::start(&[&["ingest"][..], &store, common].concat());
        let mut args = vec!["worker", "--control-interval", "100ms"];
        args.extend(&store);
        args.extend(common);
        args.extend(worker_flags);
        let worker = Testbed::start(&args);
        let query = Testbed::start(&[&["query"][..], &store, common].concat());
        ingest.wait_serving("testbed.v1.IngestService").await;
        worker.wait_serving("testbed.v1.WorkerControlService").await;
        query.wait_serving("testbed.v1.QueryService").await;
        let args = StoreArgs {
            redis_url: Some(url.to_owned()),
            redis_cluster: cluster,
            ..StoreArgs::default()
        };
        let log = AnyLog::Redis(RedisLog::connect(&args).await.unwrap());
        Self {
            ingest,
            worker,
            query,
            log,
            store: store.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Stops ingest (SIGKILL, or SIGTERM and its drain) and starts a new
    /// one on the same address, as a restarted pod behind a Service.
    async fn restart_ingest(&mut self, redis: &RedisServer, kill: bool) {
        let addr = self.ingest.addr.to_string();
        if kill {
            self.ingest.kill();
        } else {
            self.ingest.sigterm();
            let (status, _) = self.ingest.wait_exit(Duration::from_secs(15)).await;
            assert!(status.success(), "ingest exited {status} after SIGTERM");
        }
        let url = redis.url();
        self.ingest = Testbed::start_at(&["ingest", "--redis-url", &url], &[], &addr);
        self.ingest.wait_serving("testbed.v1.IngestService").await;
    }

    /// Another worker process on the same store, named `name`.
    async fn another_worker(&self, name: &str) -> Testbed {
        self.another_worker_with(name, &[]).await
    }

    /// [`Split::another_worker`] with `flags`.
    async fn another_worker_with(&self, name: &str, flags: &[&str]) -> Testbed {
        let mut args = vec!["worker", "--consumer-name", name];
        args.extend(self.store.iter().map(String::as_str));
        args.extend(flags);
        let worker = Testbed::start(&args);
        worker.wait_serving("testbed.v1.WorkerControlService").await;
        worker
    }

    /// Entries pending with consumer `name`, summed over partitions.
    async fn pending_with(&self, name: &str) -> u64 {
        let mut held = 0;
        for p in 0..self.log.partitions() {
            held += self
                .log
                .consumers(p)
                .await
                .unwrap()
                .iter()
                .filter(|c| c.name == name)
                .map(|c| c.pending)
                .sum::<u64>();
        }
        held
    }

    /// Starts `testbed sim --verify` against ingest (and query for the
    /// check) at `rate` for `secs`, from 50 devices.
    fn sim(&self, run_id: &str, rate: u32, secs: u32) -> Sim {
        Sim::verified(
            run_id,
            self.ingest.addr,
            self.query.addr,
            rate,
            secs,
            50,
            "20s",
        )
    }

    /// Waits until the pipeline has processed something (the load runs).
    async fn wait_processing(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut processed = 0;
            for p in 0..self.log.partitions() {
                processed += self.log.figures(p).await.unwrap().processed;
            }
            if processed > 0 {
                return;
            }
            assert!(Instant::now() < deadline, "nothing processed in 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Injects a failure fault of `ratio` on devices starting with
    /// `prefix`, for `ttl`; returns when it expires (wall clock).
    async fn fail(&self, prefix: &str, ratio: f64, ttl: Duration) -> SystemTime {
        let mut control = WorkerControlServiceClient::new(self.worker.channel().await);
        let fault = Fault {
            scope: Some(FaultScope {
                device_prefix: prefix.into(),
                payload_kind: 0,
            }),
            effect: Some(Effect::Failure(FailureFault { ratio })),
            ..Default::default()
        };
        let injected = control
            .inject_fault(InjectFaultRequest {
                fault: Some(fault),
                ttl: Some(ttl.try_into().unwrap()),
            })
            .await
            .unwrap()
            .into_inner();
        let expires = injected.fault.unwrap().expire_time.unwrap();
        SystemTime::try_from(expires).unwrap()
    }

    /// Waits until no entry appended before `at` is pending, polling every
    /// 10 ms (60 s at most); returns when that was.
    async fn wait_nothing_pending_from_before(&self, at: SystemTime) -> SystemTime {
        let at_ms = at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut older = false;
            for p in 0..self.log.partitions() {
                let pending = self.log.pending(p).await.unwrap();
                older |= pending.oldest_ms.is_some_and(|ms| ms < at_ms);
            }
            if !older {
                return SystemTime::now();
            }
            assert!(
                Instant::now() < deadline,
                "entries from before {at:?} still pending after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The worker's `/metrics` sample `name{labels}`, summed over series
    /// whose labels contain `having`.
    async fn worker_metric(&self, name: &str, having: &str) -> f64 {
        let (_, body) = common::scrape(self.worker.metrics_addr, "text/plain").await;
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| l.contains(having))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// How long a simulator run of the suite may take, verification included.
/// The local TCP ports of process `pid`'s sockets (from /proc), to find
/// its connections in Redis' `CLIENT LIST`.
fn local_ports_of(pid: u32) -> std::collections::HashSet<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|target| {
                    let t = target.to_string_lossy();
                    Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = std::collections::HashSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (cols.get(1), cols.get(9)) else {
                continue;
            };
            if inodes.contains(*inode)
                && let Some(port) = local
                    .rsplit(':')
                    .next()
                    .and_then(|h| u16::from_str_radix(h, 16).ok())
            {
                ports.insert(port);
            }
        }
    }
    ports
}

/// Whether one of `ports`' Redis connections has sent `command` (last
/// command, lowercase) and waits in it: `CLIENT LIST`'s `cmd=` field.
fn waits_in(redis: &RedisServer, ports: &std::collections::HashSet<u16>, command: &str) -> bool {
    redis.command(&["CLIENT", "LIST"]).lines().any(|client| {
        let field = |name: &str| {
            client
                .split(' ')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        let port = field("addr").and_then(|a| a.rsplit(':').next()?.parse::<u16>().ok());
        port.is_some_and(|p| ports.contains(&p)) && field("cmd") == Some(command)
    })
}

/// [`kill_twice_waiting_in`], then `sim`'s verdict: exit 0, verification
/// passed, every expected event processed. Prints what the kills saw,
/// headed `what`.
async fn kill_twice_then_verified(
    split: &Split,
    servers: &[&RedisServer],
    command: &str,
    sim: Sim,
    what: &str,
) {
    let (attempt, kills) = kill_twice_waiting_in(split, servers, command).await;
    let Finished { code, stderr, json } = sim.finish(SIM_LIMIT).await;
    let v = &json["verification"];
    eprintln!(
        "{what} ({attempt} pauses): expected {}, processed {}, dead-lettered {}; \
         per kill (entries held, kill -> taken over): {kills:?}",
        sum(&v["expected"]),
        sum(&v["processed"]),
        v["dead_lettered"],
    );
    assert_exactly_once(code, &stderr, v);
}

/// The run exited 0, its verification passed, and it processed every
/// expected event.
fn assert_exactly_once(code: Option<i32>, stderr: &str, v: &serde_json::Value) {
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["expected"], v["processed"]);
}

/// Starts workers beside `split`'s and SIGKILLs each while it waits in
/// `command` (all writes held on `servers` by `CLIENT PAUSE WRITE`) until
/// two were caught so; returns the pauses it took and, per kill, the
/// entries the victim held after it and the time until they were taken
/// over. A victim applies without lingering (`--apply-linger 0ms`), so a
/// pause finds it between its read and its commit often; a pause that
/// does not is lifted after 300 ms and tried again while the load runs.
async fn kill_twice_waiting_in(
    split: &Split,
    servers: &[&RedisServer],
    command: &str,
) -> (u32, Vec<(u64, Duration)>) {
    let mut kills = Vec::new();
    let mut pauses = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while kills.len() < 2 {
        let name = format!("victim-{}", kills.len() + 1);
        let mut victim = split
            .another_worker_with(&name, &["--apply-linger", "0ms"])
            .await;
        loop {
            assert!(
                Instant::now() < deadline,
                "the victim was never caught in {command} ({pauses} pauses)"
            );
            pauses += 1;
            // Its connections now (the applier's opens at its first apply).
            let ports = local_ports_of(victim.pid());
            assert!(!ports.is_empty(), "no socket of the victim found in /proc");
            // Writes wait (EXEC and scripts among them; WATCH and reads go
            // on), so an apply under way stops at its commit.
            for server in servers {
                assert_eq!(server.command(&["CLIENT", "PAUSE", "5000", "WRITE"]), "+OK");
            }
            let paused = Instant::now();
            let mut caught = false;
            while paused.elapsed() < Duration::from_millis(300) {
                if servers.iter().any(|s| waits_in(s, &ports, command)) {
                    caught = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if caught {
                victim.kill();
            }
            for server in servers {
                assert_eq!(server.command(&["CLIENT", "UNPAUSE"]), "+OK");
            }
            if caught {
                break;
            }
            // Let it read and apply again before the next pause.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let killed = Instant::now();
        let held = split.pending_with(&name).await;
        wait_taken_over(split, &name, killed).await;
        kills.push((held, killed.elapsed()));
    }
    (pauses, kills)
}

/// Waits until the worker `name`, killed at `killed`, holds no entry any
/// more (another took them over), within 25 s of the kill.
async fn wait_taken_over(split: &Split, name: &str, killed: Instant) {
    while split.pending_with(name).await > 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(25),
            "{name}'s entries not taken over after 25 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const SIM_LIMIT: Duration = Duration::from_secs(90);

/// The suite's tests, in a module of their own so that the test command
/// runs them in a step of their own, with their figures shown
/// (`--skip fault_suite` elsewhere).
mod fault_suite {
    use super::*;

    /// A failure fault on 30% of the entries for 2 s while the simulator
    /// runs: the worker retries its own failed entries with backoff, so
    /// everything accepted is processed exactly once and `--verify` passes
    /// with the default `--claim-idle` (30 s, longer than its 20 s
    /// `--verify-timeout`: the claim path could not have done it). Prints
    /// the time from the fault's expiry to the last entry from before it
    /// processed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transient_failure_is_retried_promptly_and_counted_once() {
        let redis = RedisServer::start();
        let split = Split::start(&redis, &[]).await;
        let sim = split.sim("transient", 1000, 5);
        split.wait_processing().await;
        let expiry = split.fail("", 0.3, Duration::from_secs(2)).await;
        let caught_up = split.wait_nothing_pending_from_before(expiry).await;
        let Finished { code, stderr, json } = sim.finish(SIM_LIMIT).await;
        let v = &json["verification"];
        let retried = split
            .worker_metric("worker_events_retried_total", "injected_fault")
            .await;
        let dead = split
            .worker_metric("worker_events_dead_lettered_total", "")
            .await;
        eprintln!(
            "transient failure (ratio 0.3, 2 s): expected {}, processed {}, dead-lettered {}, events retried {retried}, \
             catch-up after the fault's expiry {:?}",
            sum(&v["expected"]),
            sum(&v["processed"]),
            v["dead_lettered"],
            caught_up.duration_since(expiry).unwrap_or_default(),
        );
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(v["passed"], true, "{v}");
        assert!(sum(&v["expected"]) > 0);
        assert_eq!(v["expected"], v["processed"]);
        assert!(
            retried > 0.0,
            "the fault failed nothing: the test tested nothing"
        );
        assert_eq!(dead, 0.0);
        drop(split);
    }

    /// A failure fault on one device's entries that outlasts the retry
    /// budget (3 deliveries, 50 → 100 ms apart): those entries are
    /// dead-lettered and counted, nothing else is lost, and `--verify` fails
    /// naming them dead-lettered, not lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_past_the_retry_budget_is_dead_lettered_and_named() {
        let redis = RedisServer::start();
        let flags = [
            "--max-deliveries",
            "3",
            "--retry-initial-delay",
            "50ms",
            "--retry-max-delay",
            "100ms",
        ];
        let split = Split::start(&redis, &flags).await;
        let sim = split.sim("budget", 500, 3);
        split.wait_processing().await;
        split.fail("sim-00003", 1.0, Duration::from_secs(4)).await;
        let Finished { code, stderr, json } = sim.finish(SIM_LIMIT).await;
        let v = &json["verification"];
        let (expected, processed) = (sum(&v["expected"]), sum(&v["processed"]));
        let dead = v["dead_lettered"].as_u64().unwrap_or(0);
        let dead_metric = split
            .worker_metric("worker_events_dead_lettered_total", "")
            .await;
        eprintln!(
            "failure past the budget: expected {expected}, processed {processed}, dead-lettered {dead} \
             (worker metric {dead_metric}); diff {}",
            v["diff"]
        );
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(v["passed"], false);
        assert!(dead > 0, "nothing dead-lettered: {v}");
        assert_eq!(processed + dead, expected, "{v}");
        assert_eq!(dead_metric, dead as f64);
        let diff: Vec<&str> = v["diff"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d.as_str())
            .collect();
        assert!(
            diff.contains(&format!("all {dead} were dead-lettered, not lost (the dead-letter stream holds them with the reason)").as_str()),
            "{diff:?}"
        );
        assert!(
            !diff
                .iter()
                .any(|d| d.contains("lost:") || d.contains("are lost")),
            "{diff:?}"
        );
        drop(split);
    }

    /// A worker SIGKILLed twice while it holds entries (and restarted
    /// under a new name, as a pod is), beside a second worker: the
    /// survivor takes the dead consumer's entries over once its heartbeat
    /// lapses (two `--heartbeat-interval`s), not `--claim-idle` (30 s,
    /// longer than the sim's 20 s `--verify-timeout`) later, and every
    /// accepted event is processed exactly once. Prints, per kill, the
    /// entries stranded and the time until the last was processed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sigkilled_worker_is_taken_over_within_heartbeats() {
        let redis = RedisServer::start();
        let split = Split::start(&redis, &[]).await;
        let sim = split.sim("takeover", 1000, 8);
        split.wait_processing().await;
        let mut recoveries = Vec::new();
        let mut attempt = 0;
        while recoveries.len() < 2 {
            attempt += 1;
            assert!(attempt <= 20, "the victim never held entries when killed");
            let name = format!("victim-{attempt}");
            let mut victim = split.another_worker(&name).await;
            // Kill it while it holds entries (it may ack them between the
            // look and the kill: then it is tried again).
            let deadline = Instant::now() + Duration::from_secs(10);
            while split.pending_with(&name).await == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            victim.kill();
            let killed = Instant::now();
            let stranded = split.pending_with(&name).await;
            if stranded == 0 {
                continue;
            }
            wait_taken_over(&split, &name, killed).await;
            recoveries.push((stranded, killed.elapsed()));
        }
        let Finished { code, stderr, json } = sim.finish(SIM_LIMIT).await;
        let v = &json["verification"];
        let taken = split
            .worker_metric("worker_entries_taken_over_total", "")
            .await;
        eprintln!(
            "worker SIGKILL x2: expected {}, processed {}, dead-lettered {}, entries taken over {taken}; \
             per kill (entries stranded, kill -> last taken over): {recoveries:?}",
            sum(&v["expected"]),
            sum(&v["processed"]),
            v["dead_lettered"],
        );
        assert_exactly_once(code, &stderr, v);
        assert!(taken > 0.0, "the surviving worker took nothing over");
        drop(split);
    }

    /// Ingest SIGKILLed mid-stream and restarted on its address, then
    /// SIGTERMed under load and restarted again: the simulator re-sends
    /// every batch left unanswered (same producer and sequence) and
    /// nothing is lost or counted twice; a batch is never answered OK
    /// without being appended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ingest_killed_and_stopped_mid_stream_loses_and_doubles_nothing() {
        let redis = RedisServer::start();
        let mut split = Split::start(&redis, &[]).await;
        let sim = split.sim("ingest-restarts", 1000, 6);
        split.wait_processing().await;
        split.restart_ingest(&redis, true).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        split.restart_ingest(&redis, false).await;
        let Finished { code, stderr, json } = sim.finish(SIM_LIMIT).await;
        let v = &json["verification"];
        eprintln!(
            "ingest SIGKILL + SIGTERM mid-stream: sent {}, accepted {}, failed {}, protocol errors {}, resent {}, \
             max ack latency {} ms; expected {}, processed {}",
            json["total"]["sent"],
            json["total"]["accepted"],
            json["total"]["failed"],
            json["total"]["protocol_errors"],
            v["resent_batches"],
            json["total"]["latency"]["max_ms"],
            sum(&v["expected"]),
            sum(&v["processed"]),
        );
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(v["passed"], true, "{v}");
        assert_eq!(json["total"]["sent"], json["total"]["accepted"], "{stderr}");
        assert_eq!(json["total"]["protocol_errors"], 0);
        // The load ran across both restarts: some batch waited for them.
        let max_ms = json["total"]["latency"]["max_ms"].as_f64().unwrap_or(0.0);
        assert!(
            max_ms >= 50.0,
            "no batch waited for a restart (max {max_ms} ms): the test tested nothing"
        );
    }

    /// Redis frozen (SIGSTOP) for longer than `--redis-timeout` under load:
    /// a call fails fast with UNAVAILABLE, every service reports
    /// NOT_SERVING, and once Redis runs again everything is SERVING and
    /// every event is processed exactly once, with no restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_redis_fails_calls_fast_and_is_recovered_from() {
        use testbed_proto::v1::PublishRequest;
        use testbed_proto::v1::ingest_service_client::IngestServiceClient;
        use tonic_health::pb::health_check_response::ServingStatus;

        let redis = RedisServer::start();
        let common = ["--health-interval", "100ms", "--redis-timeout", "300ms"];
        let split = Split::start_with(&redis, &common, &[]).await;
        let sim = split.sim("frozen-redis", 1000, 6);
        split.wait_processing().await;
        redis.pause();
        let paused = Instant::now();
        // A unary call meanwhile: refused, and within the call bound.
        let mut ingest = IngestServiceClient::new(split.ingest.channel().await);
        let started = Instant::now();
        let event = common::pipeline::event("frozen-probe", 0, 1, common::pipeline::test_minute());
        let refused = ingest
            .publish(PublishRequest {
                events: vec![event],
                ..Default::default()
            })
            .await;
        let refused_after = started.elapsed();
        // Every service says it cannot work (readiness; the overall status
        // "" is liveness and stays SERVING: a frozen Redis is no reason
        // to restart the pods).
        let mut not_serving = Vec::new();
        let services = [
            (&split.ingest, "testbed.v1.IngestService"),
            (&split.worker, "testbed.v1.WorkerControlService"),
            (&split.query, "testbed.v1.QueryService"),
        ];
        for (t, name) in services {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let status = common::health_check(t.channel().await, name).await;
                if matches!(status, Ok(ServingStatus::NotServing)) {
                    not_serving.push(paused.elapsed());
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "still SERVING 5 s into the freeze"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(1500).saturating_sub(paused.elapsed())).await;
        redis.resume();
        let resumed = Instant::now();
        for (t, name) in services {
            t.wait_serving(name).await;
        }
        let serving_again = resumed.elapsed();
        let Finished { code, stderr, json } = sim.finish(SIM_LIMIT).await;
        let v = &json["verification"];
        eprintln!(
            "Redis frozen 1.5 s: a Publish refused {:?} after {refused_after:?}; NOT_SERVING after {not_serving:?}; \
             SERVING again {serving_again:?} after SIGCONT; sent {}, accepted {}, resent {}; expected {}, processed {}",
            refused.as_ref().err().map(tonic::Status::code),
            json["total"]["sent"],
            json["total"]["accepted"],
            v["resent_batches"],
            sum(&v["expected"]),
            sum(&v["processed"]),
        );
        // Refused as retryable, within the call bound, not hung on the
        // frozen store.
        assert_eq!(
            refused.as_ref().err().map(tonic::Status::code),
            Some(tonic::Code::Unavailable)
        );
        assert!(refused_after < Duration::from_secs(2), "{refused_after:?}");
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(v["passed"], true, "{v}");
    }

    /// A worker SIGKILLed while its apply waits between WATCH and EXEC
    /// (its EXEC held by `CLIENT PAUSE WRITE`, seen in `CLIENT LIST`),
    /// twice, beside a second worker: the transaction counts whole or not
    /// at all (Redis may still run an EXEC it had read once the pause
    /// ends), the dead consumer's entries are taken over, and every
    /// accepted event is processed exactly once. Prints, per kill, the
    /// entries the victim held after it and the time until they were
    /// taken over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_killed_between_watch_and_exec_applies_nothing_twice() {
        let redis = RedisServer::start();
        let split = Split::start(&redis, &[]).await;
        let sim = split.sim("watch-exec", 1000, 12);
        split.wait_processing().await;
        kill_twice_then_verified(
            &split,
            &[&redis],
            "exec",
            sim,
            "worker SIGKILL between WATCH and EXEC x2",
        )
        .await;
        drop(split);
    }

    /// The same on a Redis Cluster (three masters), where the apply is one
    /// script: a worker SIGKILLed while its apply script waits on a master
    /// (`CLIENT PAUSE WRITE` on every master), twice: the script runs whole
    /// or not at all, the entries are taken over, every event processed
    /// exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_killed_in_its_apply_script_on_a_cluster_applies_nothing_twice() {
        let cluster = RedisCluster::start();
        let split = Split::start_on(&cluster.url(), true, &[], &[]).await;
        let sim = split.sim("cluster-script", 1000, 12);
        split.wait_processing().await;
        let masters: Vec<&RedisServer> = cluster
            .masters()
            .iter()
            .map(|&i| &cluster.nodes[i])
            .collect();
        kill_twice_then_verified(
            &split,
            &masters,
            "evalsha",
            sim,
            "worker SIGKILL in its apply script on Redis Cluster x2",
        )
        .await;
        drop(split);
    }
}
