//! The cold-start step: how long a `testbed` process takes from being
//! spawned until every `grpc.health.v1` status it serves is `SERVING`,
//! what kubelet probes and an autoscaler's new pods wait on.
//!
//! Each role is started `--cold-start-runs` times: `testbed all` on its
//! embedded log, and `testbed ingest`, `worker` and `query` each against a
//! `redis-server` started fresh for that run (so every run creates its
//! consumer group and keys from nothing). The harness picks the gRPC port
//! beforehand, as a pod spec fixes it, spawns the process, and from that
//! instant tries to connect every `--cold-start-poll` (1 ms); once a
//! channel is up it sends, over that one channel, a `Check` for `""` and
//! for each service the role registers, all at once, every poll, until all
//! answer `SERVING`. The names polled are checked afterwards against what
//! the process lists through reflection. Figures, verdicts and the
//! section are [`crate::cold_report`]'s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use testbed_proto::service_names;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::cold_report::{ColdStart, ColdStartRole, ColdStartRun};
use crate::error::{Context as _, Error, Result};
use crate::pipeline::KEY_PREFIX;
use crate::process::{Proc, inherited_settings, log_tail};
use crate::redis::{Redis, free_port};

/// Settings of the cold-start step.
#[derive(Debug, Clone)]
pub struct ColdStartOptions {
    /// Starts per role.
    pub runs: u32,
    /// How often the harness tries to connect and checks health.
    pub poll: Duration,
    /// The longest one start may take before it counts as failed.
    pub timeout: Duration,
    /// `--partitions` of the services.
    pub partitions: u32,
}

/// How long a process may take to exit on SIGTERM before it counts as
/// failed (and is killed).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The roles measured, in order, with the store each runs on.
pub const ROLES: [(&str, &str); 4] = [
    ("all", "embedded"),
    ("ingest", "redis"),
    ("worker", "redis"),
    ("query", "redis"),
];

/// The health names a role serves: `""` (the process) and each service it
/// registers.
pub fn health_names(role: &str) -> Vec<&'static str> {
    let services: &[&'static str] = match role {
        "all" => &[
            service_names::INGEST,
            service_names::WORKER_CONTROL,
            service_names::QUERY,
        ],
        "ingest" => &[service_names::INGEST],
        "worker" => &[service_names::WORKER_CONTROL],
        "query" => &[service_names::QUERY],
        _ => &[],
    };
    std::iter::once("")
        .chain(services.iter().copied())
        .collect()
}

/// Runs the step: every role, `runs` times each.
pub async fn run(
    testbed: &Path,
    redis_server: &Path,
    work: &Path,
    o: &ColdStartOptions,
) -> Result<ColdStart> {
    let mut roles = Vec::new();
    for (role, store) in ROLES {
        let mut r = ColdStartRole {
            role: role.to_owned(),
            store: store.to_owned(),
            health_names: health_names(role).iter().map(|s| (*s).to_owned()).collect(),
            loadavg: crate::machine::loadavg_short(),
            ..Default::default()
        };
        for i in 1..=o.runs {
            let dir = work.join(format!("{role}-{i}"));
            std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
            let redis = match store {
                "redis" => Some(Redis::start(redis_server, &dir.join("redis")).await?),
                _ => None,
            };
            let (run, registered) = start_once(testbed, role, redis.as_ref(), &dir, o).await?;
            if let Some(redis) = redis {
                redis.stop().await?;
            }
            tracing::info!(role, run = i, serving_ms = run.serving_ms, "cold start");
            if r.registered.is_empty() {
                r.registered = registered;
            }
            r.runs.push(run);
        }
        roles.push(r);
    }
    Ok(ColdStart {
        runs_per_role: o.runs,
        poll_ms: o.poll.as_secs_f64() * 1e3,
        roles,
    })
}

/// One start of `role`: spawn, poll until every name is `SERVING` (or the
/// timeout), list the registered services, SIGTERM and time the exit.
async fn start_once(
    testbed: &Path,
    role: &str,
    redis: Option<&Redis>,
    dir: &Path,
    o: &ColdStartOptions,
) -> Result<(ColdStartRun, Vec<String>)> {
    let port = free_port()?;
    let grpc: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut args: Vec<String> = vec![
        role.to_owned(),
        "--grpc-addr".into(),
        grpc.to_string(),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
        "--partitions".into(),
        o.partitions.to_string(),
        "--key-prefix".into(),
        KEY_PREFIX.into(),
    ];
    if let Some(redis) = redis {
        args.extend(["--redis-url".into(), redis.url()]);
    }
    let log = dir.join(format!("{role}.log"));
    let started = Instant::now();
    let mut proc = Proc::spawn(role, testbed, &args, &[], &inherited_settings(), &log)?;
    let names = health_names(role);
    let polled = poll_serving(&mut proc, grpc, &names, started, o).await;
    let (mut run, channel) = match polled {
        Ok(found) => found,
        Err(e) => (
            ColdStartRun {
                error: Some(e.to_string()),
                ..Default::default()
            },
            None,
        ),
    };
    let registered = match &channel {
        Some(channel) if run.serving_ms.is_some() => {
            list_services(channel.clone()).await.unwrap_or_default()
        }
        _ => Vec::new(),
    };
    drop(channel);
    // SIGTERM, then its exit polled as often as its start (`Proc::wait`
    // looks every 20 ms, too coarse for a figure in milliseconds).
    let stopping = Instant::now();
    proc.signal_term();
    let exited = loop {
        if let Some(status) = proc.try_exit()? {
            break Some(status);
        }
        if stopping.elapsed() > STOP_TIMEOUT {
            break None;
        }
        tokio::time::sleep(o.poll).await;
    };
    match exited {
        Some(status) => {
            run.stop_ms = Some(stopping.elapsed().as_secs_f64() * 1e3);
            if run.error.is_none() && !status.success() {
                run.error = Some(format!("exited with {status} on SIGTERM"));
            }
        }
        None => {
            proc.terminate(Duration::from_secs(1)).await?;
            if run.error.is_none() {
                run.error = Some(format!("still running {STOP_TIMEOUT:?} after SIGTERM"));
            }
        }
    }
    Ok((run, registered))
}

/// Tries to connect every poll until a channel is up, then checks every
/// name over it each poll until all are `SERVING`. Returns the run's
/// figures and the channel.
async fn poll_serving(
    proc: &mut Proc,
    grpc: SocketAddr,
    names: &[&'static str],
    started: Instant,
    o: &ColdStartOptions,
) -> Result<(ColdStartRun, Option<Channel>)> {
    let ms = |at: Instant| at.duration_since(started).as_secs_f64() * 1e3;
    let endpoint = Endpoint::from_shared(format!("http://{grpc}"))
        .map_err(|e| Error::parse("the health endpoint", e))?
        .connect_timeout(Duration::from_millis(200))
        .timeout(Duration::from_secs(2));
    let mut run = ColdStartRun::default();
    let mut serving: BTreeMap<String, f64> = BTreeMap::new();
    let mut channel: Option<Channel> = None;
    let mut checks = 0u64;
    loop {
        if let Some(status) = proc.try_exit()? {
            return Err(Error::Process(format!(
                "exited with {status} before it was ready: {}",
                log_tail(proc.log())
            )));
        }
        if started.elapsed() > o.timeout {
            let missing: Vec<&str> = names
                .iter()
                .filter(|n| !serving.contains_key(**n))
                .copied()
                .collect();
            return Err(Error::Process(format!(
                "not SERVING within {:?} (still waiting for {missing:?}): {}",
                o.timeout,
                log_tail(proc.log())
            )));
        }
        if channel.is_none()
            && let Ok(c) = endpoint.connect().await
        {
            run.connected_ms = Some(ms(Instant::now()));
            channel = Some(c);
        }
        if let Some(c) = &channel {
            let pending: Vec<&'static str> = names
                .iter()
                .filter(|n| !serving.contains_key(**n))
                .copied()
                .collect();
            let answers = futures::future::join_all(pending.iter().map(|name| {
                let mut client = HealthClient::new(c.clone());
                async move {
                    client
                        .check(HealthCheckRequest {
                            service: (*name).to_owned(),
                        })
                        .await
                        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
                }
            }))
            .await;
            checks += 1;
            let now = ms(Instant::now());
            for (name, up) in pending.iter().zip(answers) {
                if up {
                    serving.insert((*name).to_owned(), now);
                }
            }
            if serving.len() == names.len() {
                run.serving_ms = Some(now);
                run.checks = checks;
                run.serving_at_ms = serving;
                return Ok((run, channel));
            }
        }
        tokio::time::sleep(o.poll).await;
    }
}

/// The services the process lists through reflection (v1).
async fn list_services(channel: Channel) -> Result<Vec<String>> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .context(|| "ServerReflection.ListServices")?
        .into_inner();
    let mut names = Vec::new();
    while let Some(reply) = replies
        .message()
        .await
        .context(|| "ServerReflection.ListServices")?
    {
        if let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response {
            names.extend(list.service.into_iter().map(|s| s.name));
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every role polls the process status and each service it registers;
    /// `all` registers the three.
    #[test]
    fn health_names_per_role() {
        assert_eq!(health_names("ingest"), ["", "testbed.v1.IngestService"]);
        assert_eq!(
            health_names("worker"),
            ["", "testbed.v1.WorkerControlService"]
        );
        assert_eq!(health_names("query"), ["", "testbed.v1.QueryService"]);
        assert_eq!(health_names("all").len(), 4);
        assert!(ROLES.iter().all(|(role, _)| health_names(role).len() > 1));
    }
}
