//! Channels to the target: one HTTP/2 connection per `--connections`, over
//! every address of a `dns:///` target; TLS for `https://` targets, and
//! for `dns:///` ones when a CA is given ([`ClientTls`]).

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

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

/// The scheme of the addresses a `dns:///` target resolves to: `https`
/// when `tls` trusts a CA.
fn dns_scheme(tls: Option<&ClientTls>) -> &'static str {
    if tls.is_some_and(ClientTls::trusts) {
        "https"
    } else {
        "http"
    }
}

/// The endpoint URIs behind `target`: itself for `http(s)://`, one per
/// resolved address for `dns:///name:port` (so streams spread over every
/// pod of a headless Service rather than sticking to one), `http://`
/// ones ([`guarded_channels`] reaches them over TLS when it has a CA).
pub async fn endpoints(target: &str) -> Result<Vec<String>, ConnectError> {
    let Some(name) = target.strip_prefix("dns:///") else {
        return Ok(vec![target.to_owned()]);
    };
    let addrs: Vec<String> = tokio::net::lookup_host(name)
        .await
        .map_err(|e| ConnectError::Resolve {
            name: name.to_owned(),
            reason: e.to_string(),
        })?
        .map(|addr| format!("http://{addr}"))
        .collect();
    if addrs.is_empty() {
        return Err(ConnectError::Resolve {
            name: name.to_owned(),
            reason: "no addresses".to_owned(),
        });
    }
    Ok(addrs)
}

/// How often a `dns:///` target is resolved again, so pods added by a
/// scale-out receive new streams and removed pods stop receiving them.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(10);

/// The endpoint of `uri`; over TLS when it is `https://`, verified as
/// `host` (none: the URI's own host) unless `--tls-server-name` says.
fn endpoint(
    uri: &str,
    tls: Option<&ClientTls>,
    host: Option<&str>,
) -> Result<Endpoint, ConnectError> {
    let invalid = |reason: String| ConnectError::Invalid {
        target: uri.to_owned(),
        reason,
    };
    let e = Endpoint::from_shared(uri.to_owned())
        .map(|e| {
            e.connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                // Within the servers' ping policy (--ping-min-interval, 10 s by
                // default): a client pinging more often gets too_many_pings.
                .http2_keep_alive_interval(Duration::from_secs(30))
        })
        .map_err(|e| invalid(e.to_string()))?;
    if !uri.starts_with("https://") {
        return Ok(e);
    }
    match tls.filter(|tls| tls.trusts()) {
        Some(tls) => e
            .tls_config(tls.config(host))
            .map_err(|e| invalid(e.to_string())),
        None => Err(invalid(
            "https:// targets need --tls-ca (no system roots are loaded)".to_owned(),
        )),
    }
}

/// `connections` lazily-connecting channels to `target`. Lazy, so a target
/// that is not up yet shows up as failed batches (UNAVAILABLE) rather than
/// aborting the run.
///
/// For `dns:///name:port`, each channel balances calls over every address
/// the name resolves to, and a background task resolves it again every
/// [`RESOLVE_EVERY`], adding and removing addresses (the task ends with the
/// channel). Long-lived streams stay where they were opened; streams opened
/// later (new lanes, reconnects) go to the current set of pods.
pub async fn channels(
    target: &str,
    connections: u32,
    tls: Option<&ClientTls>,
) -> Result<Vec<Channel>, ConnectError> {
    guarded_channels(target, connections, None, tls).await
}

/// [`channels`], where each address a `dns:///` target resolves to later
/// is added only if `guard` allows it (a served run whose name was allowed
/// for its addresses, not by name: it must not drift to others).
pub async fn guarded_channels(
    target: &str,
    connections: u32,
    guard: Option<AllowList>,
    tls: Option<&ClientTls>,
) -> Result<Vec<Channel>, ConnectError> {
    let count = connections.max(1) as usize;
    let Some(name) = target.strip_prefix("dns:///") else {
        let e = endpoint(target, tls, None)?;
        return Ok((0..count).map(|_| e.connect_lazy()).collect());
    };
    // Fail early on a name that does not resolve at all.
    endpoints(target).await?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let (channel, changes) = Channel::balance_channel::<String>(64);
        tokio::spawn(follow_dns(
            name.to_owned(),
            changes,
            guard.clone(),
            tls.cloned(),
        ));
        out.push(channel);
    }
    Ok(out)
}

/// Keeps a balanced channel's endpoints equal to what `name` resolves to
/// (over TLS, verified as `name`'s host, when `tls` has a CA).
async fn follow_dns(
    name: String,
    changes: tokio::sync::mpsc::Sender<tonic::transport::channel::Change<String, Endpoint>>,
    guard: Option<AllowList>,
    tls: Option<ClientTls>,
) {
    use tonic::transport::channel::Change;
    let scheme = dns_scheme(tls.as_ref());
    let host = name.rsplit_once(':').map(|(host, _)| host.to_owned());
    let mut current: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    loop {
        match tokio::net::lookup_host(&name).await {
            Ok(addrs) => {
                let fresh: std::collections::BTreeSet<String> =
                    addrs.map(|a| format!("{scheme}://{a}")).collect();
                for gone in current.difference(&fresh) {
                    if changes.send(Change::Remove(gone.clone())).await.is_err() {
                        return;
                    }
                }
                for added in fresh.difference(&current) {
                    // The guard checks the address, whatever the scheme.
                    let plain = added.replacen("https://", "http://", 1);
                    if let Some(guard) = &guard
                        && let Err(refusal) = guard.check(&plain).await
                    {
                        tracing::warn!(%name, address = %added, ?refusal, "a new address of the target is not allowed; not sending to it");
                        continue;
                    }
                    let e = match endpoint(added, tls.as_ref(), host.as_deref()) {
                        Ok(e) => e,
                        Err(err) => {
                            tracing::warn!(%name, error = %err, "cannot reach a new address of the target");
                            continue;
                        }
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
            Err(err) => {
                tracing::warn!(%name, error = %err, "re-resolving the target failed; keeping the last addresses")
            }
        }
        tokio::select! {
            () = changes.closed() => return,
            () = tokio::time::sleep(RESOLVE_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
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
