//! The live status page's figures ([`testbed_telemetry::status`]): this
//! process asks its own gRPC server, over loopback, what any client could
//! ask: `grpc.health.v1` per service, `QueryService.GetPipelineStats`
//! (`all`, `query`) and `WorkerControlService.GetStatus` (`all`, `worker`).
//!
//! Going through the public API keeps dependencies one way (telemetry
//! knows no service, no service knows the page) and shows exactly what a
//! client would see. Each call is bounded by [`CALL_TIMEOUT`]; a call that
//! fails shows its status on the page instead of a figure. With
//! authentication on, the pipeline and worker calls need a token the page
//! does not have: it says so. With TLS on the gRPC port the page cannot
//! call it in plaintext: health comes from the `--probe-addr` listener
//! when there is one, and the page says why the rest is not shown.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use testbed_proto::prost_types;
use testbed_proto::tonic;
use testbed_proto::tonic::transport::{Channel, Endpoint};
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_proto::v1::worker_control_service_client::WorkerControlServiceClient;
use testbed_proto::v1::{GetPipelineStatsRequest, GetStatusRequest, WorkerState};
use testbed_telemetry::{StatusPage, StatusSection, StatusSource};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Longest a status call may take before the page shows it as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// What the page of one process asks for.
pub struct LoopbackStatus {
    role: &'static str,
    services: Vec<&'static str>,
    channel: Channel,
    /// Where health is asked: the gRPC port, or with TLS on it the
    /// plaintext probe listener (none: not shown).
    health_channel: Option<Channel>,
    /// The gRPC port speaks TLS only: the pipeline and worker calls are
    /// not made.
    tls_only: bool,
    /// Ingested and processed totals at the previous snapshot, for the
    /// per-stage throughput.
    last: Mutex<Option<(Instant, u64, u64)>>,
}

const INGEST: &str = "testbed.v1.IngestService";
const WORKER: &str = "testbed.v1.WorkerControlService";
const QUERY: &str = "testbed.v1.QueryService";
const SIM: &str = "testbed.v1.SimulatorService";

/// The address to reach a listener bound to `addr` from this host.
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

impl LoopbackStatus {
    /// The status of the `role` process serving gRPC on `grpc_addr`, in
    /// TLS only when `tls_only` (then health is asked on `probe`, the
    /// `--probe-addr` listener, if any).
    pub fn new(
        role: &'static str,
        grpc_addr: SocketAddr,
        tls_only: bool,
        probe: Option<SocketAddr>,
    ) -> Option<Self> {
        let services = match role {
            "all" => vec![INGEST, WORKER, QUERY],
            "ingest" => vec![INGEST],
            "worker" => vec![WORKER],
            "query" => vec![QUERY],
            "sim" => vec![SIM],
            _ => Vec::new(),
        };
        let lazy = |addr: SocketAddr| {
            Endpoint::from_shared(format!("http://{}", loopback(addr)))
                .ok()
                .map(|e| e.timeout(CALL_TIMEOUT).connect_lazy())
        };
        let channel = lazy(grpc_addr)?;
        let health_channel = if tls_only {
            probe.and_then(lazy)
        } else {
            Some(channel.clone())
        };
        Some(Self {
            role,
            services,
            channel,
            health_channel,
            tls_only,
            last: Mutex::new(None),
        })
    }

    async fn health(&self) -> Vec<(String, String)> {
        let Some(channel) = &self.health_channel else {
            return vec![(
                String::new(),
                "not shown (TLS only, no --probe-addr)".to_owned(),
            )];
        };
        let mut client = HealthClient::new(channel.clone());
        let mut out = Vec::new();
        for service in std::iter::once("").chain(self.services.iter().copied()) {
            let status = match client
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
            {
                Ok(r) => r.into_inner().status().as_str_name().to_owned(),
                Err(status) => format!("unknown ({})", status.code()),
            };
            out.push((service.to_owned(), status));
        }
        out
    }

    async fn pipeline(&self) -> Vec<StatusSection> {
        let mut client = QueryServiceClient::new(self.channel.clone());
        let stats = match client
            .get_pipeline_stats(GetPipelineStatsRequest { window: None })
            .await
        {
            Ok(r) => r.into_inner().stats.unwrap_or_default(),
            Err(status) => return vec![failed("Pipeline", &status)],
        };
        let now = Instant::now();
        let previous = self
            .last
            .lock()
            .ok()
            .and_then(|mut last| last.replace((now, stats.ingested, stats.processed)));
        let rate = |before: u64, after: u64, at: Instant| {
            let secs = now.duration_since(at).as_secs_f64();
            if secs > 0.0 {
                format!("{:.1}", after.saturating_sub(before) as f64 / secs)
            } else {
                "-".into()
            }
        };
        let (ingest_rate, worker_rate) = match previous {
            Some((at, ingested, processed)) => (
                rate(ingested, stats.ingested, at),
                rate(processed, stats.processed, at),
            ),
            None => ("-".into(), "-".into()),
        };
        let ms = |d: &Option<prost_types::Duration>| {
            d.as_ref().map_or("-".into(), |d| {
                format!("{:.3}", d.seconds as f64 * 1e3 + f64::from(d.nanos) / 1e6)
            })
        };
        let e2e = stats.end_to_end_latency.unwrap_or_default();
        vec![
            StatusSection {
                title: "Throughput per stage".into(),
                columns: vec!["stage".into(), "total".into(), "events/s now".into()],
                rows: vec![
                    vec![
                        "ingest (appended)".into(),
                        stats.ingested.to_string(),
                        ingest_rate,
                    ],
                    vec![
                        "worker (processed)".into(),
                        stats.processed.to_string(),
                        worker_rate,
                    ],
                ],
                note: Some(format!(
                    "Totals since the store was created; \"now\" is since the previous load of this page. The pipeline's processing rate over the last 5 minutes: {:.1}/s; end-to-end latency below: entries appended in the last 5 minutes.",
                    stats.processing_rate
                )),
            },
            StatusSection {
                title: "Pipeline".into(),
                columns: vec!["figure".into(), "value".into()],
                rows: vec![
                    vec![
                        "backlog (appended, not yet processed)".into(),
                        stats.backlog.to_string(),
                    ],
                    vec![
                        "pending batches (delivered, not yet acknowledged)".into(),
                        stats.pending.to_string(),
                    ],
                    vec!["duplicates".into(), stats.duplicates.to_string()],
                    vec!["dead-lettered".into(), stats.dead_lettered.to_string()],
                    vec!["end-to-end p50 (ms)".into(), ms(&e2e.p50)],
                    vec!["end-to-end p90 (ms)".into(), ms(&e2e.p90)],
                    vec!["end-to-end p99 (ms)".into(), ms(&e2e.p99)],
                    vec!["end-to-end max (ms)".into(), ms(&e2e.max)],
                ],
                note: None,
            },
        ]
    }

    async fn workers(&self) -> Vec<StatusSection> {
        let mut client = WorkerControlServiceClient::new(self.channel.clone());
        let status = match client.get_status(GetStatusRequest {}).await {
            Ok(r) => r.into_inner(),
            Err(status) => return vec![failed("Workers", &status)],
        };
        let workers = status
            .workers
            .iter()
            .map(|w| {
                let state = WorkerState::try_from(w.state)
                    .unwrap_or(WorkerState::Unspecified)
                    .as_str_name()
                    .trim_start_matches("WORKER_STATE_")
                    .to_owned();
                vec![
                    w.consumer_name.clone(),
                    state,
                    w.concurrency.to_string(),
                    w.events_processed.to_string(),
                    format!("{:.1}", w.events_per_second),
                    w.arch.clone(),
                ]
            })
            .collect();
        let partitions = status
            .group
            .unwrap_or_default()
            .partitions
            .iter()
            .map(|p| {
                let age = p.oldest_pending_age.as_ref().map_or("-".into(), |d| {
                    format!("{:.3}", d.seconds as f64 + f64::from(d.nanos) / 1e9)
                });
                vec![
                    p.partition.to_string(),
                    p.backlog.to_string(),
                    p.pending.to_string(),
                    age,
                ]
            })
            .collect();
        vec![
            StatusSection {
                title: "Workers".into(),
                columns: [
                    "consumer",
                    "state",
                    "concurrency",
                    "processed",
                    "events/s",
                    "arch",
                ]
                .map(String::from)
                .to_vec(),
                rows: workers,
                note: None,
            },
            StatusSection {
                title: "Backlog per partition".into(),
                columns: ["partition", "backlog", "pending", "oldest pending (s)"]
                    .map(String::from)
                    .to_vec(),
                rows: partitions,
                note: None,
            },
        ]
    }
}

fn failed(title: &str, status: &tonic::Status) -> StatusSection {
    let why = match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            "needs a token (authentication is on); read it with grpcurl and a read token".to_owned()
        }
        code => format!("{code}: {}", status.message()),
    };
    StatusSection {
        title: title.to_owned(),
        columns: Vec::new(),
        rows: Vec::new(),
        note: Some(format!("not available: {why}")),
    }
}

impl StatusSource for LoopbackStatus {
    fn snapshot(&self) -> Pin<Box<dyn Future<Output = StatusPage> + Send + '_>> {
        Box::pin(async move {
            let mut sections = Vec::new();
            if self.tls_only && (self.services.contains(&QUERY) || self.services.contains(&WORKER))
            {
                sections.push(StatusSection {
                    title: "Pipeline".to_owned(),
                    columns: Vec::new(),
                    rows: Vec::new(),
                    note: Some(
                        "not shown: the gRPC port serves TLS only and this page asks it in \
                         plaintext; read GetPipelineStats and GetStatus with grpcurl and the CA \
                         (and a client certificate under mTLS), or the same figures at /metrics"
                            .to_owned(),
                    ),
                });
            } else if self.services.contains(&QUERY) {
                sections.extend(self.pipeline().await);
            }
            if !self.tls_only && self.services.contains(&WORKER) {
                sections.extend(self.workers().await);
            }
            StatusPage {
                role: self.role.to_owned(),
                version: testbed_build_info::long_version(),
                arch: testbed_build_info::arch().to_owned(),
                health: self.health().await,
                sections,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wildcard listener is reached on loopback; a specific one as bound.
    #[test]
    fn reaches_wildcard_listeners_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        assert_eq!(loopback(v4).to_string(), "127.0.0.1:50051");
        let v6: SocketAddr = "[::]:9".parse().unwrap();
        assert_eq!(loopback(v6).to_string(), "[::1]:9");
        let own: SocketAddr = "10.0.0.7:1".parse().unwrap();
        assert_eq!(loopback(own), own);
    }
}
