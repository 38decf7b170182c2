//! [`GrpcServer`]: health, reflection, serving and graceful shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::server::HealthReporter;

use crate::accept::Incoming;
use crate::auth::{AuthLayer, Policy, Role, TokenSet};
use crate::conn_metrics::ConnMetrics;
use crate::health::Health;
use crate::limits::Limits;
use crate::shed::ShedLayer;
use crate::streams::CallsLayer;
use crate::tls::TlsServer;

/// The health service's full name, as reflection lists it.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// The reflection services' full names.
pub const REFLECTION_SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The embedded descriptor sets could not be loaded by reflection (a
    /// build defect, caught by the tests).
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed while serving.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Adds a generated tonic server to a [`GrpcServer`] (an expression of type
/// `&mut GrpcServer`) with the server's message size limits
/// ([`GrpcServer::limits`]); generated servers share no trait for them, so
/// this is a macro. Expands to an `.await`: use it in an `async` block.
#[macro_export]
macro_rules! add_limited_service {
    ($server:expr, $service:expr $(,)?) => {{
        let server: &mut $crate::GrpcServer = $server;
        let limits = server.limits().clone();
        let service = $service
            .max_decoding_message_size(limits.max_decoding_message_size)
            .max_encoding_message_size(limits.max_encoding_message_size);
        server.add_service(service).await
    }};
}

/// A gRPC server under construction: add the services, then [`serve`].
///
/// Health and reflection are added by [`serve`]; reflection advertises
/// exactly the services added here plus health and reflection themselves.
///
/// [`serve`]: GrpcServer::serve
#[derive(Debug)]
pub struct GrpcServer {
    routes: RoutesBuilder,
    background: tokio::task::JoinSet<()>,
    probe_interval: Duration,
    limits: Limits,
    services: Vec<&'static str>,
    health: Health,
    health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    /// The tokens calls must present; none: auth off.
    tokens: Option<std::sync::Arc<TokenSet>>,
    /// The role each RPC requires, declared by the services.
    policy: Policy,
    /// TLS of the gRPC listener; none: plaintext.
    tls: Option<Arc<TlsServer>>,
    /// The plaintext health-only listener (`--probe-addr`).
    probe: Option<TcpListener>,
}

impl Default for GrpcServer {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcServer {
    /// An empty server; every status starts `NOT_SERVING` until
    /// [`GrpcServer::serve`] marks the overall status `SERVING`.
    pub fn new() -> Self {
        let reporter = HealthReporter::new();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        Self {
            routes: RoutesBuilder::default(),
            background: tokio::task::JoinSet::new(),
            probe_interval: Duration::from_millis(250),
            limits: Limits::default(),
            services: Vec::new(),
            health: Health::new(reporter),
            health_service,
            tokens: None,
            policy: Policy::default(),
            tls: None,
            probe: None,
        }
    }

    /// Serves over TLS (`--tls-cert`; none: plaintext). The handshake is
    /// part of each connection's handshake timeout ([`crate::tls`]); the
    /// files are re-read while serving.
    pub fn set_tls(&mut self, tls: Option<Arc<TlsServer>>) {
        self.tls = tls;
    }

    /// Also serves `grpc.health.v1` alone, in plaintext, on `listener`
    /// (`--probe-addr`: kubelet gRPC probes cannot speak TLS).
    pub fn set_probe_listener(&mut self, listener: Option<TcpListener>) {
        self.probe = listener;
    }

    /// Every method of `service` requires a token of at least `role` when
    /// tokens are configured (see [`crate::auth`]); an undeclared service
    /// requires `admin`.
    pub fn require(&mut self, service: &str, role: Role) -> &mut Self {
        self.policy.service(service, role);
        self
    }

    /// `method` of `service` requires `role`, overriding its service's.
    pub fn require_method(&mut self, service: &str, method: &str, role: Role) -> &mut Self {
        self.policy.method(service, method, role);
        self
    }

    /// Checks calls against `tokens` (none: no authentication).
    pub fn set_tokens(&mut self, tokens: Option<std::sync::Arc<TokenSet>>) {
        self.tokens = tokens;
    }

    /// A handle on this server's health statuses, for services that watch a
    /// dependency.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Runs `task` for as long as the server: a dependency watcher, a
    /// consumer loop. Tasks must end by themselves once the shutdown token
    /// is cancelled; [`GrpcServer::serve`] waits for them within the grace
    /// period (after the gRPC drain) and aborts what is left. A task that
    /// panics is logged, not lost.
    pub fn spawn_background<F>(&mut self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.background.spawn(task);
    }

    /// How often services probe their dependencies (`--health-interval`).
    pub fn probe_interval(&self) -> Duration {
        self.probe_interval
    }

    /// Sets [`GrpcServer::probe_interval`].
    pub fn set_probe_interval(&mut self, interval: Duration) {
        self.probe_interval = interval;
    }

    /// The transport and request limits this server applies (the flags'
    /// defaults until [`GrpcServer::set_limits`]). Services read the message
    /// size limits from here for their generated servers.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Sets [`GrpcServer::limits`]; call before adding services.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Makes `services`' health follow a dependency: `probe` runs every
    /// [`GrpcServer::probe_interval`] until `shutdown`, and each answer sets
    /// their status (see [`crate::watch_dependency`]).
    pub fn follow_dependency<P, Fut>(
        &mut self,
        name: &'static str,
        services: Vec<&'static str>,
        shutdown: CancellationToken,
        probe: P,
    ) where
        P: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let watch = crate::dependency::watch_dependency(
            name,
            self.health(),
            services,
            self.probe_interval,
            shutdown,
            probe,
        );
        self.spawn_background(watch);
    }

    /// Makes `service`'s health follow the event store `log`: `NOT_SERVING`
    /// while the store is unreachable.
    pub fn follow_store(
        &mut self,
        service: &'static str,
        log: &testbed_stream::AnyLog,
        shutdown: CancellationToken,
    ) {
        self.follow_dependency("event store", vec![service], shutdown, log.probe());
    }

    /// A server configured from bound `listeners` (probe interval,
    /// limits).
    pub fn for_listeners(listeners: &crate::Listeners) -> Self {
        let mut server = Self::new();
        server.set_probe_interval(listeners.health_interval);
        server.set_limits(listeners.limits.clone());
        server.set_tokens(listeners.auth.clone());
        server.set_tls(listeners.tls.clone());
        server
    }

    /// [`GrpcServer::serve`] on the gRPC listener of `listeners`, with their
    /// grace period and their probe listener.
    pub async fn serve_on(
        mut self,
        listeners: crate::Listeners,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        self.set_probe_listener(listeners.probe);
        self.serve(listeners.grpc, shutdown, listeners.grace).await
    }

    /// The full names of the services added so far.
    pub fn services(&self) -> &[&'static str] {
        &self.services
    }

    /// Adds a service. Its health status starts `SERVING`; a service with a
    /// dependency sets it from then on through [`GrpcServer::health`].
    pub async fn add_service<S>(&mut self, service: S) -> &mut Self
    where
        S: tower_service::Service<
                http::Request<Body>,
                Response = http::Response<Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.health.set_serving(S::NAME, true).await;
        self.services.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Serves on `listener` until `shutdown` is cancelled, then drains.
    ///
    /// Shutdown order: every health status goes `NOT_SERVING`; the listener
    /// stops accepting; in-flight calls and open streams get `grace` to
    /// finish (streaming handlers watch the same token and end themselves);
    /// whatever is still open after that is dropped. Returns `Ok` in both
    /// cases: running out of grace is logged, not an error.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<(), ServeError> {
        // Each reflection version must also describe the other one: it is
        // listed, and `buf curl --list-methods` resolves every listed service.
        let mut reflection_v1 = reflection_builder().register_encoded_file_descriptor_set(
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        );
        let mut reflection_v1alpha = reflection_builder()
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET);
        let advertised = self
            .services
            .iter()
            .copied()
            .chain([HEALTH_SERVICE])
            .chain(REFLECTION_SERVICES);
        for name in advertised {
            reflection_v1 = reflection_v1.with_service_name(name);
            reflection_v1alpha = reflection_v1alpha.with_service_name(name);
        }
        self.routes
            .add_service(self.health_service.clone())
            .add_service(reflection_v1.build_v1()?)
            .add_service(reflection_v1alpha.build_v1alpha()?);
        self.health.set_serving("", true).await;

        let health = self.health.clone();
        let services = self.services.clone();
        let signal_token = shutdown.clone();
        let stopping = async move {
            signal_token.cancelled().await;
            health.begin_shutdown(&services).await;
            tracing::info!("health NOT_SERVING; draining in-flight calls");
        };
        match (&self.tokens, listener.local_addr()) {
            (Some(tokens), _) => {
                tracing::info!(tokens = tokens.len(), "bearer-token authentication on")
            }
            (None, Ok(addr)) if !addr.ip().is_loopback() => tracing::warn!(
                %addr,
                "no --auth-tokens-file: every RPC is open to whoever reaches this address"
            ),
            (None, _) => {}
        }
        let limits = self.limits.clone();
        tracing::info!(
            max_connections = limits.max_connections,
            max_concurrent_requests = limits.max_concurrent_requests,
            "connection limits"
        );
        if let Some(tls) = &self.tls {
            tracing::info!(mutual = tls.mutual(), "TLS on");
            self.background
                .spawn(Arc::clone(tls).watch(shutdown.clone()));
        }
        if let Some(probe) = self.probe.take() {
            self.background.spawn(serve_probe(
                probe,
                limits.clone(),
                self.health_service.clone(),
                shutdown.clone(),
            ));
        }
        // Accept backoff, the connection cap, and each connection's TLS,
        // handshake, idle, age and ping limits (crate::accept, crate::conn).
        let incoming = Incoming::new(
            listener,
            limits.clone(),
            self.tls.clone(),
            ConnMetrics::default(),
        );
        // Connection age is enforced by crate::conn, not by tonic's
        // max_connection_age (which, with a grace, closes at age + grace
        // without ever sending GOAWAY).
        let server = tonic::transport::Server::builder()
            .timeout(limits.request_timeout)
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_max_header_list_size(limits.max_header_list_size)
            .initial_stream_window_size(limits.initial_stream_window)
            .initial_connection_window_size(limits.initial_connection_window)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .http2_max_pending_accept_reset_streams(Some(limits.max_pending_resets))
            .http2_max_local_error_reset_streams(Some(limits.max_local_error_resets))
            // Outermost: every RPC is traced and measured, including the
            // time spent in any layer added below it (shed calls too).
            .layer(testbed_telemetry::rpc::RpcLayer::new())
            // Inside the tracing: refused calls are traced and measured
            // with their code; before every service, so none is reached
            // without its role.
            .layer(AuthLayer::new(self.tokens.clone(), self.policy.clone()))
            // Before shedding, so a shed call also counts as a call on its
            // connection (it ends at once).
            .layer(CallsLayer)
            // Innermost of ours: a call past the process-wide limit is
            // refused before any handler work or buffering.
            .layer(ShedLayer::new(limits.max_concurrent_requests))
            .add_routes(self.routes.routes())
            .serve_with_incoming_shutdown(incoming, stopping);
        tokio::pin!(server);

        let mut background = self.background;
        let grace_deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(grace_deadline);
        let mut grace_over = false;
        let mut result = Ok(());
        tokio::select! {
            served = &mut server => {
                result = served.map_err(ServeError::from);
                tracing::info!("gRPC server drained");
            }
            () = &mut grace_deadline => {
                grace_over = true;
                tracing::warn!(grace = ?grace, "shutdown grace period over; closing remaining calls");
            }
        }
        // Background tasks (consumers finishing and acking what they hold)
        // share the same grace period.
        shutdown.cancel();
        while !background.is_empty() {
            if grace_over {
                tracing::warn!(
                    tasks = background.len(),
                    "grace period over; aborting background tasks"
                );
                background.abort_all();
                break;
            }
            tokio::select! {
                joined = background.join_next() => {
                    if let Some(Err(err)) = joined
                        && err.is_panic()
                    {
                        tracing::error!(error = %err, "background task panicked");
                    }
                }
                () = &mut grace_deadline => grace_over = true,
            }
        }
        result
    }
}

/// Serves `grpc.health.v1` alone, in plaintext, on `listener` until
/// `shutdown` (the `--probe-addr` listener), under the same connection
/// limits as the main port (a cap of its own).
async fn serve_probe(
    listener: TcpListener,
    limits: Limits,
    health: tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    shutdown: CancellationToken,
) {
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "plaintext health-only probe listener");
    let incoming = Incoming::new(listener, limits.clone(), None, ConnMetrics::default());
    let served = tonic::transport::Server::builder()
        .timeout(limits.request_timeout)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_size)
        .add_service(health)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await;
    if let Err(err) = served {
        tracing::warn!(error = %err, "probe listener failed");
    }
}

/// A reflection builder that knows every descriptor this process serves.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(testbed_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
