//! Channels to the target: one HTTP/2 connection per `--connections`, over
//! every address of a `dns:///` target; TLS for `https://` targets, and
//! for `dns:///` ones when a CA is given ([`ClientTls`]).
//!
//! The Rust client builds them ([`testbed_client::connect()`]: endpoint
//! settings, the `dns:///` resolve-and-follow loop); this module adds the
//! simulator's side: its target syntax, its errors, and the allow-list as
//! the client's [`AddressGuard`] for served runs.

use testbed_client::{AddressGuard, Options};
use tonic::transport::Channel;

use crate::load::allow::AllowList;
use crate::load::tls::ClientTls;

/// Why the target could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The target is not a valid endpoint.
    #[error("invalid target {target}: {reason}")]
    Invalid {
        /// The target.
        target: String,
        /// Why.
        reason: String,
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

impl From<testbed_client::ConnectError> for ConnectError {
    fn from(err: testbed_client::ConnectError) -> Self {
        use testbed_client::ConnectError as Client;
        match err {
            Client::InvalidUrl { url, reason } => Self::Invalid {
                target: url,
                reason,
            },
            Client::TlsNeedsCa { url } => Self::Invalid {
                target: url,
                reason: "https:// targets need --tls-ca (no system roots are loaded)".to_owned(),
            },
            Client::Resolve { name, reason } => Self::Resolve { name, reason },
        }
    }
}

/// Checks a target: `http(s)://HOST:PORT` or `dns:///NAME:PORT` (the
/// `--target` flag's and `RunSpec.target`'s form).
pub fn parse_target(value: &str) -> Result<String, String> {
    if let Some(name) = value.strip_prefix("dns:///") {
        // gRPC's DNS resolver syntax: every address of NAME is a backend.
        let (host, port) = name
            .rsplit_once(':')
            .ok_or_else(|| "dns:/// targets need a port: dns:///NAME:PORT".to_owned())?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err("expected dns:///NAME:PORT".to_owned());
        }
        return Ok(value.to_owned());
    }
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err("expected http://HOST:PORT, https://HOST:PORT or dns:///NAME:PORT".to_owned());
    }
    let uri = value
        .parse::<tonic::transport::Uri>()
        .map_err(|e| format!("not a valid URI: {e}"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err("missing host".to_owned());
    }
    Ok(value.to_owned())
}

/// The endpoint URIs behind `target`: itself for `http(s)://`, one per
/// resolved address for `dns:///name:port` (so streams spread over every
/// pod of a headless Service rather than sticking to one), `http://`
/// ones ([`guarded_channels`] reaches them over TLS when it has a CA).
pub async fn endpoints(target: &str) -> Result<Vec<String>, ConnectError> {
    let Some(name) = target.strip_prefix("dns:///") else {
        return Ok(vec![target.to_owned()]);
    };
    let addresses = testbed_client::dns::resolve(name).await?;
    Ok(addresses
        .into_iter()
        .map(|addr| format!("http://{addr}"))
        .collect())
}

/// `connections` lazily-connecting channels to `target`. Lazy, so a target
/// that is not up yet shows up as failed batches (UNAVAILABLE) rather than
/// aborting the run.
///
/// For `dns:///name:port`, each channel balances calls over every address
/// the name resolves to, and a background task resolves it again every
/// [`Options::resolve_every`] (10 s), adding and removing addresses (the
/// task ends with the channel). Long-lived streams stay where they were
/// opened; streams opened later (new lanes, reconnects) go to the current
/// set of pods.
pub async fn channels(
    target: &str,
    connections: u32,
    tls: Option<&ClientTls>,
) -> Result<Vec<Channel>, ConnectError> {
    guarded_channels(target, connections, None, tls).await
}

/// [`channels`], where each address a `dns:///` target resolves to is
/// added only if `guard` allows it (a served run whose name was allowed
/// for its addresses, not by name: it must not drift to others).
pub async fn guarded_channels(
    target: &str,
    connections: u32,
    guard: Option<AllowList>,
    tls: Option<&ClientTls>,
) -> Result<Vec<Channel>, ConnectError> {
    // The client's defaults are the simulator's connection settings: 5 s
    // connects, a 30 s PING (within the servers' --ping-min-interval), a
    // 20 s PING timeout, no token on the channel (the senders add it).
    let options = Options {
        tls: tls.cloned(),
        guard: guard.map(address_guard),
        ..Options::default()
    };
    let count = connections.max(1) as usize;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(testbed_client::connect(target, &options).await?);
    }
    Ok(out)
}

/// The allow-list as the client's guard: an address passes as the
/// `http://` target it is, whatever the scheme the channel speaks.
fn address_guard(list: AllowList) -> AddressGuard {
    AddressGuard::new(move |address| {
        let list = list.clone();
        async move {
            list.check(&format!("http://{address}"))
                .await
                .map(drop)
                .map_err(|refusal| format!("{refusal:?}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A guarded dns:/// channel never connects to an address the guard
    /// refuses, while the unguarded one does.
    #[tokio::test]
    async fn guarded_channels_skip_refused_addresses() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use testbed_proto::v1::GetPipelineStatsRequest;
        use testbed_proto::v1::query_service_client::QueryServiceClient;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let server = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        let target = format!("dns:///localhost:{port}");
        let call = |channel: Channel| async move {
            let mut client = QueryServiceClient::new(channel);
            let _ = tokio::time::timeout(
                Duration::from_millis(500),
                client.get_pipeline_stats(GetPipelineStatsRequest { window: None }),
            )
            .await;
        };
        let refusing = AllowList::new(["http://127.0.0.1:1"], []);
        let guarded = guarded_channels(&target, 1, Some(refusing), None)
            .await
            .unwrap();
        call(guarded[0].clone()).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "a refused address was connected to"
        );
        let open = channels(&target, 1, None).await.unwrap();
        call(open[0].clone()).await;
        assert!(
            accepted.load(Ordering::SeqCst) > 0,
            "the unguarded channel never connected"
        );
        server.abort();
    }

    /// A dns:/// target resolves to every address of the name.
    #[tokio::test]
    async fn dns_targets_resolve_every_address() {
        let uris = endpoints("dns:///localhost:50051").await.unwrap();
        assert!(!uris.is_empty());
        assert!(
            uris.iter()
                .all(|u| u.starts_with("http://") && u.ends_with(":50051")),
            "{uris:?}"
        );
        assert_eq!(
            endpoints("http://10.0.0.1:1").await.unwrap(),
            vec!["http://10.0.0.1:1".to_owned()]
        );
    }
}
