//! `dns:///NAME:PORT` targets: one balanced channel over every address the
//! name resolves to, resolved again every [`Options::resolve_every`] so
//! pods added by a scale-out receive new calls and removed ones stop
//! receiving them. An optional [`AddressGuard`] decides, address by
//! address, which of them get a connection (the simulator's allow-list
//! under `testbed sim --serve`).
//!
//! The resolve-and-follow loop lives here once: [`crate::connect()`] and the
//! simulator's channels both go through it.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use tokio::sync::mpsc::Sender;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::endpoint::{ConnectError, Options, endpoint, scheme};

/// Every address `name` (`NAME:PORT`) resolves to now, in the resolver's
/// order; an error when it resolves to none.
pub async fn resolve(name: &str) -> Result<Vec<SocketAddr>, ConnectError> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(name)
        .await
        .map_err(|e| ConnectError::Resolve {
            name: name.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    if addresses.is_empty() {
        return Err(ConnectError::Resolve {
            name: name.to_owned(),
            reason: "no addresses".to_owned(),
        });
    }
    Ok(addresses)
}

/// A channel balanced over what `name` (`host:PORT`) resolves to, kept up
/// to date by a background task that ends when the last clone of the
/// channel is dropped. Fails early on a name that does not resolve at all.
pub(crate) async fn balanced(
    name: &str,
    host: &str,
    options: &Options,
) -> Result<Channel, ConnectError> {
    let first: BTreeSet<SocketAddr> = resolve(name).await?.into_iter().collect();
    let (channel, changes) = Channel::balance_channel::<String>(64);
    let mut follower = Follower {
        name: name.to_owned(),
        host: host.to_owned(),
        options: options.clone(),
        changes,
        current: BTreeSet::new(),
    };
    // The receiver is the channel just made: it is not gone yet.
    let _ = follower.update(first).await;
    tokio::spawn(follower.follow());
    Ok(channel)
}

/// The channel was dropped: nothing to follow any more.
struct Closed;

/// Keeps a balanced channel's endpoints equal to what a name resolves to.
struct Follower {
    name: String,
    /// The name to verify over TLS (the name's host).
    host: String,
    options: Options,
    changes: Sender<Change<String, Endpoint>>,
    /// What the name resolved to last, refused addresses included (so a
    /// refused one is not checked again while it stays).
    current: BTreeSet<SocketAddr>,
}

impl Follower {
    /// The endpoint key of `address`.
    fn key(&self, address: SocketAddr) -> String {
        format!("{}://{address}", scheme(&self.options))
    }

    /// Re-resolves every [`Options::resolve_every`] until the channel is
    /// dropped; a failed resolution keeps the last addresses.
    async fn follow(mut self) {
        loop {
            tokio::select! {
                () = self.changes.closed() => return,
                () = tokio::time::sleep(self.options.resolve_every) => {}
            }
            match resolve(&self.name).await {
                Ok(fresh) => {
                    if self.update(fresh.into_iter().collect()).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let name = &self.name;
                    tracing::warn!(%name, %error, "re-resolving the target failed; keeping the last addresses");
                }
            }
        }
    }

    /// Removes the addresses that are gone and adds the new ones the guard
    /// allows.
    async fn update(&mut self, fresh: BTreeSet<SocketAddr>) -> Result<(), Closed> {
        let name = &self.name;
        for gone in self.current.difference(&fresh) {
            let key = self.key(*gone);
            self.changes
                .send(Change::Remove(key))
                .await
                .map_err(|_| Closed)?;
        }
        for added in fresh.difference(&self.current) {
            if let Some(guard) = &self.options.guard
                && !guard.allows(name, *added).await
            {
                continue;
            }
            let key = self.key(*added);
            let e = match endpoint(&key, &self.options, Some(&self.host)) {
                Ok(e) => e,
                Err(error) => {
                    tracing::warn!(%name, %error, "cannot reach a new address of the target");
                    continue;
                }
            };
            self.changes
                .send(Change::Insert(key, e))
                .await
                .map_err(|_| Closed)?;
        }
        if fresh != self.current {
            tracing::info!(%name, addresses = fresh.len(), "target addresses changed");
        }
        self.current = fresh;
        Ok(())
    }
}
