//! [`Transport`]: the socket under a connection, plain or TLS.
//!
//! A TLS socket starts in its handshake, driven by the first read or write
//! hyper makes (on the connection's own task), so the handshake runs under
//! the connection guard's timers ([`crate::conn`]) and never in the accept
//! loop. Until it completes every read and write waits for it; a failed
//! handshake is counted in `server_tls_handshake_failures_total{reason}`
//! and fails every later call.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use opentelemetry::KeyValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::reload::TlsMetrics;

/// Every `reason` of `server_tls_handshake_failures_total`.
pub const FAILURE_REASONS: [&str; 7] = [
    "not_tls",
    "no_client_certificate",
    "bad_client_certificate",
    "rejected_by_client",
    "incompatible",
    "timeout",
    "other",
];

/// The `reason` label of a failed handshake:
/// - `not_tls`: the client spoke something else (plaintext HTTP/2);
/// - `no_client_certificate`: mTLS, and the client sent none;
/// - `bad_client_certificate`: its certificate did not verify (another CA,
///   expired, wrong usage);
/// - `rejected_by_client`: the client sent an alert, typically because it
///   does not trust the server's certificate;
/// - `incompatible`: no common version, cipher suite or ALPN protocol;
/// - `timeout`: not done within `--handshake-timeout`;
/// - `other`: the connection closed mid-handshake, or anything else.
pub fn failure_reason(err: &io::Error) -> &'static str {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return "other";
    };
    match tls {
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => "not_tls",
        rustls::Error::NoCertificatesPresented => "no_client_certificate",
        rustls::Error::InvalidCertificate(_) => "bad_client_certificate",
        rustls::Error::AlertReceived(_) => "rejected_by_client",
        rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => "incompatible",
        _ => "other",
    }
}

/// A connection's socket; see the module docs.
pub enum Transport {
    /// No TLS.
    Plain(TcpStream),
    /// TLS handshake under way.
    Handshaking(Box<tokio_rustls::Accept<TcpStream>>, TlsMetrics),
    /// TLS established.
    Tls(Box<TlsStream<TcpStream>>),
    /// The handshake failed or timed out.
    Failed,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "Plain",
            Self::Handshaking(..) => "Handshaking",
            Self::Tls(_) => "Tls",
            Self::Failed => "Failed",
        })
    }
}

impl Transport {
    /// A socket whose TLS handshake `accept` completes on first use.
    pub fn handshaking(accept: tokio_rustls::Accept<TcpStream>, metrics: TlsMetrics) -> Self {
        Self::Handshaking(Box::new(accept), metrics)
    }

    /// Whether the TLS handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        matches!(self, Self::Handshaking(..))
    }

    /// The handshake ran out of time: counted, and the socket dropped.
    pub fn timed_out(&mut self) {
        if let Self::Handshaking(_, metrics) = self {
            metrics
                .handshake_failures
                .add(1, &[KeyValue::new("reason", "timeout")]);
            *self = Self::Failed;
        }
    }

    /// The client's certificate chain (mTLS), once the handshake is done.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match self {
            Self::Tls(tls) => tls.get_ref().1.peer_certificates(),
            _ => None,
        }
    }

    /// The subject of the client's end-entity certificate (mTLS), RFC 4514
    /// (`CN=..., O=...`), once the handshake is done. The certificate
    /// verified against `--tls-client-ca` already; one that x509-parser
    /// cannot read is named `<unparsable certificate>` rather than dropped.
    pub fn peer_subject(&self) -> Option<String> {
        let leaf = self.peer_certificates()?.first()?;
        Some(match x509_parser::parse_x509_certificate(leaf.as_ref()) {
            Ok((_, cert)) => cert.subject().to_string(),
            Err(_) => "<unparsable certificate>".to_owned(),
        })
    }

    /// Drives the handshake; ready once the socket can carry data.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Handshaking(accept, metrics) => {
                match ready!(Pin::new(accept.as_mut()).poll(cx)) {
                    Ok(tls) => *self = Self::Tls(Box::new(tls)),
                    Err(err) => {
                        let reason = failure_reason(&err);
                        tracing::debug!(error = %err, reason, "TLS handshake failed");
                        metrics
                            .handshake_failures
                            .add(1, &[KeyValue::new("reason", reason)]);
                        *self = Self::Failed;
                        return Poll::Ready(Err(err));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Self::Failed => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "TLS handshake failed",
            ))),
            Self::Plain(_) | Self::Tls(_) => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_ready(cx))?;
        match this {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Self::Handshaking(..) | Self::Failed => {
                Poll::Ready(Err(io::ErrorKind::NotConnected.into()))
            }
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_ready(cx))?;
        match this {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            Self::Handshaking(..) | Self::Failed => {
                Poll::Ready(Err(io::ErrorKind::NotConnected.into()))
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_ready(cx))?;
        match this {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
            Self::Handshaking(..) | Self::Failed => {
                Poll::Ready(Err(io::ErrorKind::NotConnected.into()))
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        // Asked once, before the handshake: answer for what it becomes
        // (tokio-rustls' stream is always vectored).
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Handshaking(..) | Self::Tls(_) | Self::Failed => true,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_ready(cx))?;
        match this {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Self::Handshaking(..) | Self::Failed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            // close_notify, then the TCP shutdown.
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            // Nothing to say to a peer that never finished its handshake:
            // dropping the socket closes it.
            Self::Handshaking(..) | Self::Failed => Poll::Ready(Ok(())),
        }
    }
}
