//! TLS and mTLS on every server (#23): rustls through tokio-rustls, ALPN
//! `h2`, certificates re-read when their files change.
//!
//! The handshake happens inside the accept path, not around it: the
//! accept loop ([`crate::accept`]) counts the connection against
//! `--max-connections` first, then hands the socket to [`crate::conn`]
//! wrapped in a [`Transport`] that completes the TLS handshake on the
//! connection's own task, under the same `--handshake-timeout` as the
//! HTTP/2 preface. A client that opens TCP and never finishes TLS is closed
//! like one that never sends the preface, and one slow handshake never
//! holds up the accept loop (tonic's own TLS server runs handshakes without
//! a deadline).
//!
//! Why rustls with ring: it is what tonic's `tls-ring` client side uses, so
//! the process has one TLS stack and one crypto provider ([`provider`]),
//! installed once, explicitly; ring builds for every architecture the
//! images target without cmake (aws-lc-rs needs it on some).
//!
//! The configuration in use sits in an `arc-swap` cell (already in the
//! build through the Redis client): every accept takes the current one
//! without a lock, and a reload replaces it for the connections after.
//!
//! # Layout
//! - [`args`]: [`TlsArgs`], the flags (`--tls-cert`, `--tls-key`,
//!   `--tls-client-ca`, `--tls-reload-interval`).
//! - [`files`]: PEM files read and turned into a rustls `ServerConfig`,
//!   with errors naming the flag and the file.
//! - [`reload`]: [`TlsServer`]: the current configuration, swapped when
//!   the files change (polled), and the handshake metrics.
//! - [`stream`]: [`Transport`]: a plain or TLS socket, the handshake driven
//!   by the first read or write.

pub mod args;
pub mod files;
pub mod reload;
pub mod stream;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use args::TlsArgs;
pub use files::TlsError;
pub use reload::TlsServer;
pub use stream::Transport;

/// The process's one crypto provider (ring), installed as rustls' default
/// on first use so that tonic's client TLS picks the same one.
///
/// rustls 0.23.48 deprecates ring's provider for lacking post-quantum key
/// exchange (X25519MLKEM768): handshakes here use X25519 or P-256. Moving
/// to aws-lc-rs is the `aws-lc-rs` features of rustls and tokio-rustls and
/// tonic's `tls-aws-lc` in place of the ring ones, and this function.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    if let Some(installed) = CryptoProvider::get_default() {
        return Arc::clone(installed);
    }
    // A race with another thread installing it is fine: either way one
    // provider is the default from here on.
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}
