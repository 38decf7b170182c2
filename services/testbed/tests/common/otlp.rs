//! Stand-ins for an OpenTelemetry collector, healthy or not, on free
//! loopback ports.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use testbed_test_support::otlp;

/// What the receiver got.
#[derive(Default)]
pub struct Received {
    /// Every span, with the resource it came with.
    pub spans: Vec<(Resource, Span)>,
    /// Every metric: resource, name, and its points' sum (sums) or count
    /// (histograms).
    pub metrics: Vec<(Resource, String, f64)>,
    /// How many log records.
    pub logs: usize,
}

/// A healthy OTLP/gRPC receiver: answers every export at once and keeps
/// what it got.
#[derive(Clone, Default)]
pub struct Collector(pub Arc<Mutex<Received>>);

impl otlp::Receive for Collector {
    fn traces(&self, request: ExportTraceServiceRequest) {
        let mut got = self.0.lock().unwrap();
        for rs in request.resource_spans {
            let resource = rs.resource.unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.spans.push((resource.clone(), span));
                }
            }
        }
    }

    fn metrics(&self, request: ExportMetricsServiceRequest) {
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;
        let mut got = self.0.lock().unwrap();
        for rm in request.resource_metrics {
            let resource = rm.resource.unwrap_or_default();
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let value = match &m.data {
                        Some(Data::Sum(s)) => s
                            .data_points
                            .iter()
                            .map(|p| match p.value {
                                Some(N::AsInt(i)) => i as f64,
                                Some(N::AsDouble(d)) => d,
                                None => 0.0,
                            })
                            .sum(),
                        Some(Data::Histogram(h)) => {
                            h.data_points.iter().map(|p| p.count as f64).sum()
                        }
                        _ => 0.0,
                    };
                    got.metrics.push((resource.clone(), m.name.clone(), value));
                }
            }
        }
    }

    fn logs(&self, request: ExportLogsServiceRequest) {
        self.0.lock().unwrap().logs += otlp::log_records(&request);
    }
}

/// Starts a [`Collector`] on a free loopback port; returns it and its
/// endpoint (`http://127.0.0.1:PORT`).
pub async fn start_collector() -> (Collector, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let router = otlp::router(Arc::new(collector.clone()));
    tokio::spawn(async move {
        router
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (collector, format!("http://{addr}"))
}

/// A collector whose port drops connection attempts, as a NetworkPolicy or
/// a firewall that DROPs packets to it does: the client's SYN is never
/// answered, so its connect hangs (no refusal, no reset). Made by listening
/// with a backlog of 0 and never accepting, then filling the accept queue
/// from here: once it is full the kernel drops further SYNs.
pub struct DroppingPort {
    _listener: tokio::net::TcpListener,
    _queued: Vec<std::net::TcpStream>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl DroppingPort {
    /// Binds, and fills the accept queue until a connection attempt hangs.
    pub fn start() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let listener = socket.listen(0).unwrap();
        let mut queued = Vec::new();
        loop {
            // A refused or timed-out attempt means the queue is full: from
            // now on SYNs to this port go unanswered.
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(stream) => queued.push(stream),
                Err(_) => break,
            }
            assert!(queued.len() < 64, "the accept queue never filled up");
        }
        Self {
            _listener: listener,
            _queued: queued,
            endpoint: format!("http://{addr}"),
        }
    }
}

/// A collector that accepts connections and never answers, as a hung
/// collector process (or a proxy that never forwards) does: the TCP
/// connection opens, the client sends its HTTP/2 preface and export
/// requests, nothing comes back. Made by accepting every connection and
/// holding it without reading or writing.
pub struct SilentCollector {
    task: tokio::task::JoinHandle<()>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl SilentCollector {
    /// Binds a free port and starts accepting.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Self { task, endpoint }
    }
}

impl Drop for SilentCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
