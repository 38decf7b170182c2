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

use testbed_proto::v1::ingest_service_client::IngestServiceClient;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_proto::v1::worker_control_service_client::WorkerControlServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::auth::{Bearer, Token};
use crate::dns;
use crate::endpoint::{ConnectError, Options, endpoint};
use crate::tls::ClientTls;

/// A channel that sends the bearer token (if any) with every call.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// A lazily connecting channel to `url` (see the module docs for the forms).
///
/// For `dns:///NAME:PORT`, a background task resolves the name again every
/// [`Options::resolve_every`] and adds or removes addresses (those
/// [`Options::guard`] allows); it ends when the last clone of the channel
/// is dropped ([`crate::dns`]).
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
        return dns::balanced(name, host, options).await;
    }
    let uri = if url.starts_with("http://") || url.starts_with("https://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    Ok(endpoint(&uri, options, None)?.connect_lazy())
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
