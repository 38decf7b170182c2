//! From a URL to a channel: `http://HOST:PORT` (or a bare `HOST:PORT`)
//! plaintext, `dns:///NAME:PORT` balanced over every address the name
//! resolves to (as `testbed sim` does, so calls spread over every pod of a
//! headless Service), `https://HOST:PORT` over TLS ([`Options::tls`], which
//! must trust a CA; with one, a `dns:///` target's addresses are reached
//! over TLS too, verified as the name).
//!
//! Channels connect lazily: a server that is not up yet shows up as
//! UNAVAILABLE on the first calls, which [`crate::with_retries`] and the
//! [`crate::Publisher`] retry, rather than as a failed `connect`.
//!
//! TLS is rustls with ring through tonic ([`crate::ClientTls`], the type
//! the simulator's `--tls-*` flags build too).

use std::collections::BTreeSet;
use std::time::Duration;

use testbed_proto::v1::ingest_service_client::IngestServiceClient;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_proto::v1::worker_control_service_client::WorkerControlServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::auth::{Bearer, Token};
use crate::tls::ClientTls;

/// A channel that sends the bearer token (if any) with every call.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

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

/// A lazily connecting channel to `url` (see the module docs for the forms).
///
/// For `dns:///NAME:PORT`, a background task resolves the name again every
/// [`Options::resolve_every`] and adds or removes addresses; it ends when
/// the last clone of the channel is dropped.
pub async fn connect(url: &str, options: &Options) -> Result<Channel, ConnectError> {
    if url.starts_with("https://") && !options.tls.as_ref().is_some_and(ClientTls::trusts) {
        return Err(ConnectError::TlsNeedsCa {
            url: url.to_owned(),
        });
    }
    if let Some(name) = url.strip_prefix("dns:///") {
        let (host, port) = name.rsplit_once(':').unwrap_or((name, ""));
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(ConnectError::InvalidUrl {
                url: url.to_owned(),
                reason: "expected dns:///NAME:PORT".to_owned(),
            });
        }
        // Fail early on a name that does not resolve at all.
        let first = resolve(name, scheme(options)).await?;
        let (channel, changes) = Channel::balance_channel::<String>(64);
        for address in &first {
            let e = endpoint(address, options, Some(host))?;
            // The receiver is the channel just made: a send fails only if it is gone.
            let _ = changes.send(Change::Insert(address.clone(), e)).await;
        }
        tokio::spawn(follow_dns(name.to_owned(), first, changes, options.clone()));
        return Ok(channel);
    }
    let uri = if url.starts_with("http://") || url.starts_with("https://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    Ok(endpoint(&uri, options, None)?.connect_lazy())
}

/// The scheme of a `dns:///` target's addresses: `https` when
/// [`Options::tls`] trusts a CA.
fn scheme(options: &Options) -> &'static str {
    if options.tls.as_ref().is_some_and(ClientTls::trusts) {
        "https"
    } else {
        "http"
    }
}

/// The endpoint of `uri`; over TLS when it is `https://`, verified as
/// `verify_as` (none: the URI's host) unless the TLS settings name another.
fn endpoint(
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

async fn resolve(name: &str, scheme: &str) -> Result<BTreeSet<String>, ConnectError> {
    let addresses: BTreeSet<String> = tokio::net::lookup_host(name)
        .await
        .map_err(|e| ConnectError::Resolve {
            name: name.to_owned(),
            reason: e.to_string(),
        })?
        .map(|a| format!("{scheme}://{a}"))
        .collect();
    if addresses.is_empty() {
        return Err(ConnectError::Resolve {
            name: name.to_owned(),
            reason: "no addresses".to_owned(),
        });
    }
    Ok(addresses)
}

/// The host of a `NAME:PORT`.
fn host(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(host, _)| host)
}

/// Keeps a balanced channel's endpoints equal to what `name` resolves to;
/// ends when the channel is dropped.
async fn follow_dns(
    name: String,
    mut current: BTreeSet<String>,
    changes: tokio::sync::mpsc::Sender<Change<String, Endpoint>>,
    options: Options,
) {
    loop {
        tokio::select! {
            () = changes.closed() => return,
            () = tokio::time::sleep(options.resolve_every) => {}
        }
        let fresh = match resolve(&name, scheme(&options)).await {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(%name, %error, "re-resolving the target failed; keeping the last addresses");
                continue;
            }
        };
        for gone in current.difference(&fresh) {
            if changes.send(Change::Remove(gone.clone())).await.is_err() {
                return;
            }
        }
        for added in fresh.difference(&current) {
            let Ok(e) = endpoint(added, &options, Some(host(&name))) else {
                continue;
            };
            if changes
                .send(Change::Insert(added.clone(), e))
                .await
                .is_err()
            {
                return;
            }
        }
        if fresh != current {
            tracing::info!(%name, addresses = fresh.len(), "target addresses changed");
        }
        current = fresh;
    }
}

/// The three generated clients on one channel, each sending the token.
/// Cheap to clone (clones share the connection).
#[derive(Debug, Clone)]
pub struct Client {
    /// `testbed.v1.IngestService`.
    pub ingest: IngestServiceClient<AuthChannel>,
    /// `testbed.v1.QueryService`.
    pub query: QueryServiceClient<AuthChannel>,
    /// `testbed.v1.WorkerControlService`.
    pub worker: WorkerControlServiceClient<AuthChannel>,
}

impl Client {
    /// [`connect()`] to `url` and wrap the channel.
    pub async fn connect(url: &str, options: &Options) -> Result<Self, ConnectError> {
        Ok(Self::from_channel(
            connect(url, options).await?,
            options.token.clone(),
        ))
    }

    /// Wraps an existing channel, sending `token` with every call.
    pub fn from_channel(channel: Channel, token: Option<Token>) -> Self {
        let bearer = Bearer::new(token);
        Self {
            ingest: IngestServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            query: QueryServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            worker: WorkerControlServiceClient::with_interceptor(channel, bearer),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Each URL form gives a channel or the matching error.
    #[tokio::test]
    async fn urls_are_parsed() {
        let options = Options::default();
        assert!(connect("http://127.0.0.1:1", &options).await.is_ok());
        assert!(connect("127.0.0.1:1", &options).await.is_ok());
        assert!(connect("dns:///localhost:1", &options).await.is_ok());
        assert!(matches!(
            connect("https://127.0.0.1:1", &options).await,
            Err(ConnectError::TlsNeedsCa { .. })
        ));
        assert!(matches!(
            connect("dns:///localhost", &options).await,
            Err(ConnectError::InvalidUrl { .. })
        ));
        assert!(matches!(
            connect("http://", &options).await,
            Err(ConnectError::InvalidUrl { .. })
        ));
    }
}
