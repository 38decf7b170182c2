//! The system under test: a fresh `redis-server` (or, for the failover
//! step, a fresh Redis Cluster with replicas) and the testbed's processes, split (`ingest`, `worker`, `query`, as in a cluster) or
//! monolithic (`all --redis-url`), each on free loopback ports, announced
//! through `--addr-file` and ready once `grpc.health.v1` says SERVING.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use testbed_proto::v1::fault::Effect;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_proto::v1::worker_control_service_client::WorkerControlServiceClient;
use testbed_proto::v1::{
    FailureFault, Fault, FaultScope, GetPipelineStatsRequest, InjectFaultRequest, PauseRequest,
    PipelineStats,
};
use testbed_server::addr_file::{self, Announced};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cluster::RedisCluster;
use crate::error::{Context as _, Error, Result};
use crate::process::{Proc, Stopped, inherited_settings, log_tail};
use crate::redis::Redis;
use crate::telemetry::Telemetry;

/// How the services are deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// `testbed ingest`, `testbed worker`, `testbed query`.
    Split,
    /// `testbed all --redis-url`.
    Monolithic,
}

/// What the services are started with.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The `testbed` binary.
    pub testbed: PathBuf,
    /// `redis-server`.
    pub redis_server: PathBuf,
    /// Split or monolithic.
    pub topology: Topology,
    /// A Redis Cluster of three masters with a replica each
    /// ([`RedisCluster`]), with this `--cluster-node-timeout`, instead of
    /// one `redis-server`; the services get `--redis-cluster`.
    pub redis_cluster: Option<Duration>,
    /// `--partitions`.
    pub partitions: u32,
    /// `--shutdown-grace` of each service (and how long SIGTERM may take).
    pub shutdown_grace: Duration,
    /// OTLP export and sampling.
    pub telemetry: Telemetry,
    /// Extra flags per role (`all` gets every role's).
    pub ingest_args: Vec<String>,
    /// Extra `testbed worker` flags.
    pub worker_args: Vec<String>,
    /// Extra `testbed query` flags.
    pub query_args: Vec<String>,
    /// How long a process may take to become ready.
    pub ready_timeout: Duration,
    /// `RUST_LOG` of the services and the simulator; none: their default.
    /// Its filter applies to spans too, so a level above `info` also turns
    /// off the traces the telemetry step measures.
    pub rust_log: Option<String>,
}

impl PipelineOptions {
    /// `RUST_LOG` for the processes under test, when set.
    pub fn log_env(&self) -> Vec<(String, String)> {
        self.rust_log
            .iter()
            .map(|l| ("RUST_LOG".to_owned(), l.clone()))
            .collect()
    }
}

/// One running testbed process.
#[derive(Debug)]
pub struct Service {
    /// `ingest`, `worker`, `query` or `all`.
    pub role: &'static str,
    proc: Proc,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// `/metrics` address.
    pub metrics: SocketAddr,
}

/// The store a pipeline runs on.
#[derive(Debug)]
enum Store {
    Single(Redis),
    Cluster(Box<RedisCluster>),
}

impl Store {
    fn url(&self) -> String {
        match self {
            Store::Single(redis) => redis.url(),
            Store::Cluster(cluster) => cluster.url(),
        }
    }

    fn pids(&self) -> Vec<(String, u32)> {
        match self {
            Store::Single(redis) => vec![("redis".to_owned(), redis.pid())],
            Store::Cluster(cluster) => cluster.pids(),
        }
    }
}

/// A running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    redis: Store,
    services: Vec<Service>,
    /// What it was started with, for workers started later.
    options: PipelineOptions,
    /// Its probe's directory (logs and address files).
    dir: PathBuf,
}

impl Service {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    pub async fn stop(self, grace: Duration) -> Result<Stopped> {
        self.proc.terminate(grace).await
    }

    /// SIGKILL, no grace: it dies holding whatever it held.
    pub async fn kill(self) -> Result<()> {
        self.proc.kill().await?;
        Ok(())
    }
}

/// How `testbed <role>` is started: its arguments, environment, the
/// address file it will announce itself in and its log.
#[derive(Debug, Clone)]
pub struct RoleCommand {
    /// `<role> --redis-url …` and the pipeline's flags.
    pub args: Vec<String>,
    /// Variables added to the environment.
    pub env: Vec<(String, String)>,
    /// Where it announces its addresses.
    pub addr_file: PathBuf,
    /// Where its output goes.
    pub log: PathBuf,
}

/// The command of `testbed <role>` on `redis_url` with the pipeline's
/// flags, plus `extra`; `name` names its log and address files.
pub fn role_command(
    o: &PipelineOptions,
    redis_url: &str,
    dir: &Path,
    role: &'static str,
    name: &str,
    extra: &[String],
) -> RoleCommand {
    let addr_file = dir.join(format!("{name}.addr.json"));
    let mut args: Vec<String> = vec![
        role.to_owned(),
        "--redis-url".into(),
        redis_url.to_owned(),
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
        "--addr-file".into(),
        addr_file.display().to_string(),
        "--partitions".into(),
        o.partitions.to_string(),
        "--key-prefix".into(),
        KEY_PREFIX.into(),
        "--shutdown-grace".into(),
        humantime::format_duration(o.shutdown_grace).to_string(),
    ];
    if o.redis_cluster.is_some() {
        args.push("--redis-cluster".into());
    }
    if matches!(role, "ingest" | "all") {
        args.extend(o.ingest_args.iter().cloned());
    }
    if matches!(role, "worker" | "all") {
        args.extend(o.worker_args.iter().cloned());
    }
    if matches!(role, "query" | "all") {
        args.extend(o.query_args.iter().cloned());
    }
    args.extend(extra.iter().cloned());
    let mut env = o.log_env();
    env.extend(o.telemetry.env());
    env.push(("OTEL_SERVICE_NAME".into(), format!("testbed-{role}")));
    RoleCommand {
        args,
        env,
        addr_file,
        log: dir.join(format!("{name}.log")),
    }
}

/// Spawns `testbed <role>` as [`role_command`] says. Returns the process
/// and the address file it will announce itself in.
fn spawn_role(
    o: &PipelineOptions,
    redis_url: &str,
    dir: &Path,
    role: &'static str,
    name: &str,
    extra: &[String],
) -> Result<(Proc, PathBuf)> {
    let c = role_command(o, redis_url, dir, role, name, extra);
    let _ = std::fs::remove_file(&c.addr_file);
    let proc = Proc::spawn(
        name,
        &o.testbed,
        &c.args,
        &c.env,
        &inherited_settings(),
        &c.log,
    )?;
    Ok((proc, c.addr_file))
}

/// Waits until a spawned process is ready and reads what it announced.
pub async fn ready(
    role: &'static str,
    mut proc: Proc,
    addr_file: &Path,
    timeout: Duration,
) -> Result<Service> {
    let announced = wait_ready(&mut proc, addr_file, timeout).await?;
    Ok(Service {
        role,
        proc,
        grpc: announced.grpc,
        metrics: announced
            .metrics
            .ok_or_else(|| Error::Process(format!("{role} announced no metrics address")))?,
    })
}

/// The key prefix of every pipeline the harness starts.
pub const KEY_PREFIX: &str = "bench";

impl Pipeline {
    /// Starts Redis and the services in `dir` and waits until all are ready.
    pub async fn start(o: &PipelineOptions, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        let redis = if let Some(node_timeout) = o.redis_cluster {
            Store::Cluster(Box::new(
                RedisCluster::start(&o.redis_server, &dir.join("redis"), node_timeout).await?,
            ))
        } else {
            Store::Single(Redis::start(&o.redis_server, &dir.join("redis")).await?)
        };
        let roles: &[&'static str] = match o.topology {
            Topology::Split => &["ingest", "worker", "query"],
            Topology::Monolithic => &["all"],
        };
        let mut starting = Vec::new();
        for role in roles {
            let (proc, addr_file) = spawn_role(o, &redis.url(), dir, role, role, &[])?;
            starting.push((*role, proc, addr_file));
        }
        let mut services = Vec::new();
        for (role, proc, addr_file) in starting {
            services.push(ready(role, proc, &addr_file, o.ready_timeout).await?);
        }
        Ok(Self {
            redis,
            services,
            options: o.clone(),
            dir: dir.to_owned(),
        })
    }

    /// Starts one more `testbed worker` on this pipeline's Redis, as
    /// consumer `consumer`, and waits until it is ready. The caller owns
    /// it (it is not among [`Pipeline::pids`], and dropping it stops it).
    pub async fn start_worker(&self, consumer: &str) -> Result<Service> {
        let name = format!("worker-{consumer}");
        let extra = ["--consumer-name".to_owned(), consumer.to_owned()];
        let (proc, addr_file) = spawn_role(
            &self.options,
            &self.redis.url(),
            &self.dir,
            "worker",
            &name,
            &extra,
        )?;
        ready("worker", proc, &addr_file, self.options.ready_timeout).await
    }

    /// Stops a worker started by [`Pipeline::start_worker`] as the
    /// pipeline's own are stopped (SIGTERM, then SIGKILL past the grace).
    pub async fn stop_worker(&self, worker: Service) -> Result<()> {
        worker
            .proc
            .terminate(self.options.shutdown_grace + Duration::from_secs(2))
            .await?;
        Ok(())
    }

    /// Its Redis Cluster, when it runs on one.
    pub fn cluster(&self) -> Option<&RedisCluster> {
        match &self.redis {
            Store::Cluster(cluster) => Some(cluster),
            Store::Single(_) => None,
        }
    }

    /// `redis://…` of its Redis (the seeds, comma-separated, on a cluster).
    pub fn redis_url(&self) -> String {
        self.redis.url()
    }

    /// The worker it started (the first, if several).
    pub fn worker(&self) -> Result<&Service> {
        self.role(&["worker", "all"])
    }

    fn role(&self, roles: &[&str]) -> Result<&Service> {
        self.services
            .iter()
            .find(|s| roles.contains(&s.role))
            .ok_or_else(|| Error::Process(format!("no {roles:?} process in this pipeline")))
    }

    /// `http://…` of the ingest service.
    pub fn ingest_target(&self) -> Result<String> {
        Ok(format!("http://{}", self.role(&["ingest", "all"])?.grpc))
    }

    /// `http://…` of the query service.
    pub fn query_target(&self) -> Result<String> {
        Ok(format!("http://{}", self.role(&["query", "all"])?.grpc))
    }

    /// Name and pid of every process, Redis included.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .services
            .iter()
            .map(|s| (s.role.to_owned(), s.proc.pid()))
            .collect();
        out.extend(self.redis.pids());
        out
    }

    /// Events appended and not yet processed, summed over partitions, from
    /// the worker's `pipeline_backlog_events` gauges.
    pub async fn backlog(&self) -> Result<u64> {
        let addr = self.role(&["worker", "all"])?.metrics;
        let body = http_get(addr, "/metrics").await?;
        parse_backlog(&body).ok_or_else(|| {
            Error::parse(
                format!("http://{addr}/metrics"),
                "no pipeline_backlog_events",
            )
        })
    }

    /// `QueryService.GetPipelineStats` over `window`.
    pub async fn pipeline_stats(&self, window: Duration) -> Result<PipelineStats> {
        let channel = connect(&self.query_target()?).await?;
        let reply = QueryServiceClient::new(channel)
            .get_pipeline_stats(GetPipelineStatsRequest {
                window: Some(prost_types::Duration {
                    seconds: window.as_secs() as i64,
                    nanos: 0,
                }),
            })
            .await
            .context(|| "GetPipelineStats")?;
        reply
            .into_inner()
            .stats
            .ok_or_else(|| Error::parse("GetPipelineStats", "no stats in the reply"))
    }

    /// Pauses the workers, so a run whose verification cannot pass stops
    /// waiting for it (processing stalls, the simulator reports at once).
    pub async fn pause_workers(&self, reason: &str) -> Result<()> {
        let channel = connect(&format!("http://{}", self.role(&["worker", "all"])?.grpc)).await?;
        WorkerControlServiceClient::new(channel)
            .pause(PauseRequest {
                reason: reason.to_owned(),
            })
            .await
            .context(|| "WorkerControlService.Pause")?;
        Ok(())
    }

    /// Injects a failure fault on every worker (the control state is the
    /// cluster's: each worker applies it within its `--control-interval`):
    /// `ratio` of the entries fail, for `ttl`. Returns when it expires, on
    /// the worker's clock (this host's).
    pub async fn inject_failure(&self, ratio: f64, ttl: Duration) -> Result<SystemTime> {
        let channel = connect(&format!("http://{}", self.worker()?.grpc)).await?;
        let fault = Fault {
            scope: Some(FaultScope::default()),
            effect: Some(Effect::Failure(FailureFault { ratio })),
            ..Default::default()
        };
        let ttl =
            prost_types::Duration::try_from(ttl).map_err(|e| Error::parse("the fault's ttl", e))?;
        let injected = WorkerControlServiceClient::new(channel)
            .inject_fault(InjectFaultRequest {
                fault: Some(fault),
                ttl: Some(ttl),
            })
            .await
            .context(|| "WorkerControlService.InjectFault")?
            .into_inner();
        let expires = injected
            .fault
            .and_then(|f| f.expire_time)
            .ok_or_else(|| Error::parse("InjectFault", "no expire_time in the reply"))?;
        SystemTime::try_from(expires).map_err(|e| Error::parse("InjectFault's expire_time", e))
    }

    /// SIGTERM to every service (ingest first, so nothing new arrives while
    /// the others drain), then Redis. Returns the roles that did not exit 0
    /// within the grace period.
    pub async fn stop(self) -> Result<Vec<String>> {
        let mut unclean = Vec::new();
        for service in self.services {
            let role = service.role;
            let stopped = service
                .proc
                .terminate(self.options.shutdown_grace + Duration::from_secs(2))
                .await?;
            if stopped.killed || !stopped.status.success() {
                unclean.push(format!("{role}: {}", stopped.status));
            }
        }
        match self.redis {
            Store::Single(redis) => redis.stop().await?,
            Store::Cluster(cluster) => cluster.stop().await?,
        }
        Ok(unclean)
    }
}

/// A channel to `url`.
pub async fn connect(url: &str) -> Result<Channel> {
    let endpoint = Channel::from_shared(url.to_owned())
        .map_err(|e| Error::parse(format!("endpoint {url}"), e))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    endpoint
        .connect()
        .await
        .map_err(|e| Error::Process(format!("cannot connect to {url}: {e}")))
}

/// Waits for the address file, then for `grpc.health.v1` SERVING.
async fn wait_ready(proc: &mut Proc, addr_file: &Path, timeout: Duration) -> Result<Announced> {
    let deadline = Instant::now() + timeout;
    let mut announced: Option<Announced> = None;
    loop {
        if let Some(status) = proc.try_exit()? {
            return Err(Error::Process(format!(
                "{} exited with {status} before it was ready: {}",
                proc.name(),
                log_tail(proc.log())
            )));
        }
        if announced.is_none() {
            announced = addr_file::read(addr_file)
                .transpose()
                .map_err(Error::Process)?;
        }
        if let Some(a) = &announced
            && serving(a.grpc).await
        {
            return announced.ok_or_else(|| Error::Process("unreachable".into()));
        }
        if Instant::now() >= deadline {
            return Err(Error::Process(format!(
                "{} not ready within {timeout:?}: {}",
                proc.name(),
                log_tail(proc.log())
            )));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn serving(addr: SocketAddr) -> bool {
    let Ok(channel) = connect(&format!("http://{addr}")).await else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

/// A plain HTTP/1.1 GET (the metrics endpoint is HTTP/1).
async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = Vec::new();
        stream.read_to_end(&mut body).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&body).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(3), fetch)
        .await
        .map_err(|_| Error::Process(format!("GET http://{addr}{path} timed out")))?
        .context(|| format!("GET http://{addr}{path}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::parse(format!("GET http://{addr}{path}"), "no HTTP header end"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(Error::parse(
            format!("GET http://{addr}{path}"),
            head.lines().next().unwrap_or(""),
        ));
    }
    Ok(body.to_owned())
}

/// The sum of the samples of `name` on the `/metrics` page at `addr`
/// whose labels contain `having` (`""`: every series).
pub async fn metric_sum(addr: SocketAddr, name: &str, having: &str) -> Result<f64> {
    let page = http_get(addr, "/metrics").await?;
    Ok(sum_samples(&page, name, having))
}

fn sum_samples(page: &str, name: &str, having: &str) -> f64 {
    page.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with(['{', ' ']) && rest.contains(having))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sums the `pipeline_backlog_events` samples of a Prometheus text page.
fn parse_backlog(page: &str) -> Option<u64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("pipeline_backlog_events") else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())?;
        sum += value;
        found = true;
    }
    found.then_some(sum.max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-partition samples are summed; HELP/TYPE lines and look-alike
    /// names are ignored.
    #[test]
    fn backlog_sums_partitions() {
        let page = "# HELP pipeline_backlog_events Events appended\n\
                    # TYPE pipeline_backlog_events gauge\n\
                    pipeline_backlog_events{partition=\"0\",otel_scope_name=\"w\"} 10\n\
                    pipeline_backlog_events{partition=\"1\"} 32.0\n\
                    pipeline_backlog_events_total 99\n";
        assert_eq!(parse_backlog(page), Some(42));
        assert_eq!(parse_backlog("up 1\n"), None);
    }

    /// Only the named metric's series with the label are summed.
    #[test]
    fn sums_labelled_samples() {
        let page = "# TYPE worker_events_retried_total counter\n\
                    worker_events_retried_total{reason=\"injected_fault\"} 12\n\
                    worker_events_retried_total{reason=\"store_error\"} 3\n\
                    worker_events_retried_total_created 99\n";
        assert_eq!(
            sum_samples(page, "worker_events_retried_total", "injected_fault"),
            12.0
        );
        assert_eq!(sum_samples(page, "worker_events_retried_total", ""), 15.0);
    }
}
