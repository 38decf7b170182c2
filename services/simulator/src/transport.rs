//! Channels to the target: one HTTP/2 connection per `--connections`, over
//! every address of a `dns:///` target.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

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

/// The endpoint URIs behind `target`: itself for `http(s)://`, one per
/// resolved address for `dns:///name:port` (so streams spread over every
/// pod of a headless Service rather than sticking to one).
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

/// `connections` lazily-connecting channels, spread round-robin over the
/// target's endpoints. Lazy, so a target that is not up yet shows up as
/// failed batches (UNAVAILABLE) rather than aborting the run.
pub async fn channels(target: &str, connections: u32) -> Result<Vec<Channel>, ConnectError> {
    let uris = endpoints(target).await?;
    let count = (connections as usize).max(uris.len());
    (0..count)
        .map(|i| {
            let uri = &uris[i % uris.len()];
            Endpoint::from_shared(uri.clone())
                .map(|e| {
                    e.connect_timeout(Duration::from_secs(5))
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(30))
                        .connect_lazy()
                })
                .map_err(|e| ConnectError::Invalid {
                    target: uri.clone(),
                    reason: e.to_string(),
                })
        })
        .collect()
}
