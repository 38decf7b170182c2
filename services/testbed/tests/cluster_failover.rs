//! Redis Cluster failover under load, on real processes: three masters and
//! three replicas (AOF, fsync always, node timeout 1 s), `testbed ingest`,
//! `worker` and `query` with `--redis-cluster`, `testbed sim --verify` as
//! the client. A master is SIGKILLed mid-run (and, separately, a replica
//! takes over with `CLUSTER FAILOVER`): publishing must come back at the
//! full rate soon after the cluster heals, and every acknowledged event is
//! processed exactly once, except what Redis' asynchronous replication can
//! lose with `--redis-wait-replicas 0` (printed, and bounded as README
//! says). Each test prints its figures. The tests are in `fault_suite`,
//! which the test command runs on its own, one test at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Testbed;
use common::sim::{Finished, Sim, sum};
use testbed_stream::{AnyLog, EventLog as _, RedisLog, StoreArgs};
use testbed_test_support::RedisCluster;

/// Ingest, worker and query on `cluster`, with extra ingest flags.
struct Split {
    ingest: Testbed,
    _worker: Testbed,
    query: Testbed,
}

impl Split {
    async fn start(cluster: &RedisCluster, ingest_flags: &[&str]) -> Self {
        let url = cluster.url();
        let common = ["--redis-url", url.as_str(), "--redis-cluster"];
        let ingest = Testbed::start(&[&["ingest"][..], &common, ingest_flags].concat());
        let worker = Testbed::start(&[&["worker"][..], &common].concat());
        let query = Testbed::start(&[&["query"][..], &common].concat());
        ingest.wait_serving("testbed.v1.IngestService").await;
        worker.wait_serving("testbed.v1.WorkerControlService").await;
        query.wait_serving("testbed.v1.QueryService").await;
        Self {
            ingest,
            _worker: worker,
            query,
        }
    }

    /// `testbed sim --verify` at `rate` for `secs`, from 200 devices.
    fn sim(&self, run_id: &str, rate: u32, secs: u32) -> Sim {
        Sim::verified(
            run_id,
            self.ingest.addr,
            self.query.addr,
            rate,
            secs,
            200,
            "30s",
        )
    }
}

/// Waits until the load has run for `after` (the pipeline flowing).
async fn into_the_run(started: Instant, after: Duration) {
    tokio::time::sleep((started + after).saturating_duration_since(Instant::now())).await;
}

/// The pipeline's ingested total over time, sampled every 50 ms through a
/// log of its own on the cluster (calls failing during the failover are
/// skipped), until dropped.
struct Ingested {
    samples: std::sync::Arc<std::sync::Mutex<Vec<(Instant, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Ingested {
    async fn follow(cluster: &RedisCluster) -> Self {
        let args = StoreArgs {
            redis_url: Some(cluster.url()),
            redis_cluster: true,
            redis_timeout: Duration::from_millis(300),
            ..StoreArgs::default()
        };
        let log = AnyLog::Redis(RedisLog::connect(&args).await.unwrap());
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                let mut total = Some(0);
                for p in 0..log.partitions() {
                    total = match (total, log.figures(p).await) {
                        (Some(t), Ok(f)) => Some(t + f.ingested),
                        _ => None,
                    };
                }
                if let Some(total) = total {
                    out.lock().unwrap().push((Instant::now(), total));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { samples, task }
    }

    /// The time from `from` until the ingest rate over a 500 ms window
    /// first reached `rate` again (`None`: it never did).
    fn back_to(&self, from: Instant, rate: f64) -> Option<Duration> {
        let samples = self.samples.lock().unwrap();
        let after: Vec<&(Instant, u64)> = samples.iter().filter(|(at, _)| *at >= from).collect();
        for (i, (at, n)) in after.iter().enumerate() {
            let Some((later, m)) = after[i..]
                .iter()
                .find(|(t, _)| t.duration_since(*at) >= Duration::from_millis(500))
            else {
                break;
            };
            let window = later.duration_since(*at).as_secs_f64();
            if (m - n) as f64 / window >= rate {
                return Some(at.duration_since(from));
            }
        }
        None
    }
}

impl Drop for Ingested {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a master leaves.
#[derive(Debug, Clone, Copy)]
enum Departure {
    /// SIGKILL: its replica is elected after the node timeout.
    Killed,
    /// SIGKILL, then restarted once its replica is promoted (a pod
    /// restarting): it rejoins as the new master's replica.
    KilledAndRestarted,
    /// `CLUSTER FAILOVER` on its replica: a coordinated switch.
    FailedOver,
}

/// The figures of one failover run.
struct Outcome {
    code: Option<i32>,
    stderr: String,
    json: serde_json::Value,
}

/// A 12 s run at 2 000 events/s on a cluster with replicas, a master
/// leaving 3 s in; prints the figures.
async fn failover_run(run: &str, departure: Departure, ingest_flags: &[&str]) -> Outcome {
    const RATE: u32 = 2000;
    let mut cluster = RedisCluster::start_with_replicas();
    let split = Split::start(&cluster, ingest_flags).await;
    let ingested = Ingested::follow(&cluster).await;
    let started = Instant::now();
    let sim = split.sim(run, RATE, 12);
    into_the_run(started, Duration::from_secs(3)).await;
    let master = cluster.masters()[0];
    let replica = cluster.replica_of(master).expect("a replica");
    let left = Instant::now();
    match departure {
        Departure::Killed | Departure::KilledAndRestarted => cluster.nodes[master].stop(),
        Departure::FailedOver => {
            let reply = cluster.nodes[replica].command(&["CLUSTER", "FAILOVER"]);
            assert_eq!(reply, "+OK", "CLUSTER FAILOVER");
        }
    }
    cluster.wait_master(replica);
    let promoted = left.elapsed();
    let mut rejoined = None;
    if let Departure::KilledAndRestarted = departure {
        cluster.nodes[master].restart();
        cluster.wait_replica_in_sync(master);
        rejoined = Some(left.elapsed());
    }
    cluster.wait_ok();
    let Finished { code, stderr, json } = sim.finish(Duration::from_secs(120)).await;
    let v = &json["verification"];
    let (expected, processed) = (sum(&v["expected"]), sum(&v["processed"]));
    let back = ingested.back_to(left, f64::from(RATE) * 0.9);
    eprintln!(
        "{departure:?} master ({ingest_flags:?}): replica promoted after {promoted:?}, old master back \
         as a replica after {rejoined:?}; appends back \
         at 90% of the rate {back:?} after (appends to a master, acknowledged or not); longest publishing gap {} s \
         ending {} s into the run (the simulator's report: no accepted batch for that long); sent {}, accepted {}, failed {}, resent {}; \
         acknowledged {expected}, processed {processed}, lost {}; verification {}",
        json["total"]["longest_gap_s"],
        json["total"]["longest_gap_ended_s"],
        json["total"]["sent"],
        json["total"]["accepted"],
        json["total"]["failed"],
        v["resent_batches"],
        expected.saturating_sub(processed),
        v["diff"],
    );
    Outcome { code, stderr, json }
}

/// The tests, run by the test command in a step of their own, one at a
/// time (each runs six Redis servers and four testbed processes).
mod fault_suite {
    use super::*;

    /// A master SIGKILLed under load with `--redis-wait-replicas 0`: the
    /// replica is promoted, publishing recovers (nothing is given up), and
    /// nothing is counted twice; acknowledged events the replica had not
    /// received are lost, as README says can happen (printed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_master_is_survived_without_waiting_for_replicas() {
        let out = failover_run("kill-wait0", Departure::Killed, &[]).await;
        let (json, v) = (&out.json, &out.json["verification"]);
        assert!(
            json["total"]["accepted"].as_u64().unwrap_or(0) > 0,
            "{}",
            out.stderr
        );
        assert_eq!(
            json["total"]["failed"], 0,
            "batches given up: {}",
            out.stderr
        );
        assert_eq!(json["total"]["unanswered"], 0, "{}", out.stderr);
        assert!(
            sum(&v["processed"]) <= sum(&v["expected"]),
            "counted twice: {v}"
        );
        let _ = out.code;
    }

    /// With `--redis-wait-replicas 1` an append is acknowledged only once
    /// a replica has it: after a master is SIGKILLed every acknowledged
    /// event is processed exactly once. The promoted replica has no
    /// replica of its own until the dead master comes back (as its pod
    /// would): appends to its slots are refused UNAVAILABLE meanwhile and
    /// re-sent, so the publishing gap includes the restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_master_loses_nothing_acknowledged_with_one_replica_awaited() {
        let flags = ["--redis-wait-replicas", "1"];
        let out = failover_run("kill-wait1", Departure::KilledAndRestarted, &flags).await;
        let v = &out.json["verification"];
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(v["passed"], true, "{v}");
        assert_eq!(out.json["total"]["failed"], 0, "{}", out.stderr);
    }

    /// A coordinated `CLUSTER FAILOVER` under load: every acknowledged
    /// event is processed exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_manual_failover_loses_nothing() {
        let flags = ["--redis-wait-replicas", "1"];
        let out = failover_run("manual", Departure::FailedOver, &flags).await;
        let v = &out.json["verification"];
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(v["passed"], true, "{v}");
    }
}
