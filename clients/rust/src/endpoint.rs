//! How one address becomes a tonic [`Endpoint`]: the connection
//! [`Options`] (timeouts, keepalive, TLS, the [`AddressGuard`] of
//! `dns:///` targets), the errors of a URL that gives no channel, and the
//! endpoint itself, over TLS for `https://`.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::Endpoint;

use crate::auth::Token;
use crate::tls::ClientTls;

/// How to connect. `Options::default()` is what `testbed sim` uses.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sent as `authorization: Bearer <token>` on every call.
    pub token: Option<Token>,
    /// How long one TCP connect may take.
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval. Must be at least the servers'
    /// `--ping-min-interval` (10 s by default), or they answer GOAWAY
    /// `too_many_pings`; 30 s like the simulator.
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// How often a `dns:///` name is resolved again, so pods added by a
    /// scale-out receive new calls and removed ones stop receiving them.
    pub resolve_every: Duration,
    /// TLS for `https://` targets (needs a CA), and for the addresses of
    /// `dns:///` ones when it trusts a CA.
    pub tls: Option<ClientTls>,
    /// Checks each address a `dns:///` target resolves to, at first and at
    /// every re-resolution; a refused one gets no connection. `None`:
    /// every address is used.
    pub guard: Option<AddressGuard>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: None,
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            resolve_every: Duration::from_secs(10),
            tls: None,
            guard: None,
        }
    }
}

/// Why a URL gives no channel.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// Not a URL this crate understands.
    #[error("invalid target {url}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// `https://` without a CA to trust in [`Options::tls`] (no system
    /// roots are loaded).
    #[error("{url}: https:// needs Options::tls with a CA to trust (ClientTls::with_ca)")]
    TlsNeedsCa {
        /// The URL.
        url: String,
    },
    /// A `dns:///` name did not resolve.
    #[error("cannot resolve {name}: {reason}")]
    Resolve {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
}

type Check = dyn Fn(SocketAddr) -> BoxFuture<'static, Result<(), String>> + Send + Sync;

/// Checks each address a `dns:///` target resolves to, when the channel is
/// made and at every re-resolution: an address it refuses (`Err(reason)`)
/// gets no connection, and the refusal is logged with its reason.
#[derive(Clone)]
pub struct AddressGuard(Arc<Check>);

impl AddressGuard {
    /// A guard that runs `check` on every new address.
    pub fn new<F, Fut>(check: F) -> Self
    where
        F: Fn(SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self(Arc::new(move |address| Box::pin(check(address))))
    }

    pub(crate) async fn allows(&self, name: &str, address: SocketAddr) -> bool {
        match (self.0)(address).await {
            Ok(()) => true,
            Err(reason) => {
                tracing::warn!(%name, %address, %reason, "an address of the target is not allowed; not sending to it");
                false
            }
        }
    }
}

impl fmt::Debug for AddressGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AddressGuard(..)")
    }
}

/// The scheme of a `dns:///` target's addresses: `https` when
/// [`Options::tls`] trusts a CA.
pub(crate) fn scheme(options: &Options) -> &'static str {
    if options.tls.as_ref().is_some_and(ClientTls::trusts) {
        "https"
    } else {
        "http"
    }
}

/// The endpoint of `uri`; over TLS when it is `https://`, verified as
/// `verify_as` (none: the URI's host) unless the TLS settings name another.
pub(crate) fn endpoint(
    uri: &str,
    options: &Options,
    verify_as: Option<&str>,
) -> Result<Endpoint, ConnectError> {
    let endpoint = Endpoint::from_shared(uri.to_owned()).map_err(|e| ConnectError::InvalidUrl {
        url: uri.to_owned(),
        reason: e.to_string(),
    })?;
    if endpoint.uri().host().is_none_or(str::is_empty) {
        return Err(ConnectError::InvalidUrl {
            url: uri.to_owned(),
            reason: "missing host".to_owned(),
        });
    }
    let endpoint = endpoint
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_timeout);
    match (&options.tls, uri.starts_with("https://")) {
        (Some(tls), true) => {
            endpoint
                .tls_config(tls.config(verify_as))
                .map_err(|e| ConnectError::InvalidUrl {
                    url: uri.to_owned(),
                    reason: e.to_string(),
                })
        }
        _ => Ok(endpoint),
    }
}
