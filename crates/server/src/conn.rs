//! [`ConnIo`]: one client connection, with the lifetimes hyper does not
//! enforce itself.
//!
//! hyper (through tonic) serves the connection; this wrapper sits between
//! it and the socket and follows the HTTP/2 frame headers both ways
//! ([`crate::frames`]). From them it enforces:
//! - the handshake timeout: no TLS handshake (when TLS is on), preface and
//!   SETTINGS within `--handshake-timeout` → closed (slowloris);
//! - the idle timeout: no open call for `--idle-timeout` → GOAWAY
//!   (`NO_ERROR`, last stream 2^31-1: whatever the client sent may still be
//!   served), closed when the client goes or after `--max-connection-age-grace`;
//! - `--max-connection-age`: the same GOAWAY at that age, then the grace;
//! - the ping policy ([`crate::ping_policy`]): GOAWAY `ENHANCE_YOUR_CALM`
//!   "too_many_pings", then closed.
//!
//! hyper's own graceful shutdown is reachable only from the server-wide
//! shutdown signal and tonic's connection age (whose GOAWAY, with a grace
//! set, never comes: it closes at age + grace without one), and h2 has no
//! ping policy, so the GOAWAY frames are written here, between two of
//! hyper's frames (never inside one). h2 does not know it was sent: a client
//! that opens streams after it is served until the close, which is why the
//! graceful ones announce the largest stream id.
//!
//! Timers are polled from every read, write and flush: hyper always has a
//! read pending on a live connection, so they fire with the connection
//! task's waker and need no task of their own.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::conn_metrics::{CloseReason, ConnMetrics};
use crate::frames::{self, FrameTracker, kind};
use crate::limits::Limits;
use crate::ping_policy::PingPolicy;
use crate::tls::{TlsServer, Transport};

/// How long a connection told "too_many_pings" may take to receive it.
const PING_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a connection's calls and its guard share: the open-call count the
/// idle timeout and the ping policy read.
#[derive(Debug)]
pub struct ConnShared {
    born: Instant,
    active: AtomicUsize,
    /// Milliseconds from `born` to the moment the last call ended.
    idle_since_ms: AtomicU64,
    /// The subject of the client's certificate (mTLS), set once the
    /// handshake and the HTTP/2 preface are done, before the first call.
    client_subject: OnceLock<String>,
}

impl ConnShared {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            client_subject: OnceLock::new(),
        }
    }

    /// The subject of the client certificate this connection presented
    /// (RFC 4514, e.g. `CN=ci-runner, O=acme`); `None` without mTLS.
    pub fn client_subject(&self) -> Option<&str> {
        self.client_subject.get().map(String::as_str)
    }

    /// Calls open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Counts a call open until the guard is dropped.
    pub fn begin_call(self: &Arc<Self>) -> CallGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        CallGuard(Arc::clone(self))
    }

    fn idle_since(&self) -> Instant {
        self.born + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }
}

/// One open call; dropping it ends the call (see [`ConnShared::begin_call`]).
#[derive(Debug)]
pub struct CallGuard(Arc<ConnShared>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Store first, so a guard that sees zero calls reads a fresh time.
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connect info tonic puts in each request's extensions: the addresses,
/// and the connection's [`ConnShared`] for [`crate::streams`].
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Local and remote addresses (also inserted on their own, so
    /// `Request::remote_addr` works).
    pub tcp: TcpConnectInfo,
    /// The connection's call count.
    pub shared: Arc<ConnShared>,
}

/// The subject of the client certificate of the connection a request came
/// on (mutual TLS; see [`ConnShared::client_subject`]), for audit lines.
/// `None` on a plaintext or server-only TLS connection.
pub fn client_subject(extensions: &http::Extensions) -> Option<String> {
    extensions
        .get::<ConnInfo>()
        .and_then(|info| info.shared.client_subject())
        .map(str::to_owned)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Serving.
    Open,
    /// GOAWAY queued or sent; closed at the drain deadline.
    Draining,
    /// GOAWAY queued; closed once it is written (or at the drain deadline).
    Closing,
    /// Closed by the guard: every poll fails.
    Closed,
}

/// A client connection under its limits; see the module docs.
#[derive(Debug)]
pub struct ConnIo {
    /// The socket, plain or TLS (its handshake under the handshake timer).
    inner: Transport,
    info: ConnInfo,
    metrics: ConnMetrics,
    open: Arc<AtomicUsize>,
    read: FrameTracker,
    write: FrameTracker,
    handshake: Option<Pin<Box<Sleep>>>,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    age: Option<Pin<Box<Sleep>>>,
    drain_grace: Duration,
    drain: Option<Pin<Box<Sleep>>>,
    ping: PingPolicy,
    last_client_stream: u32,
    out: Vec<u8>,
    out_pos: usize,
    state: State,
    reason: CloseReason,
}

impl ConnIo {
    /// Wraps an accepted `stream`, its TLS handshake still to come when
    /// `tls` is given; `open` is the process's connection count, already
    /// incremented for this one (decremented on drop).
    pub fn new(
        stream: TcpStream,
        tls: Option<&TlsServer>,
        limits: &Limits,
        metrics: ConnMetrics,
        open: Arc<AtomicUsize>,
    ) -> Self {
        let tcp = <TcpStream as Connected>::connect_info(&stream);
        let now = tokio::time::Instant::now();
        let inner = match tls {
            Some(tls) => tls.accept(stream),
            None => Transport::Plain(stream),
        };
        Self {
            inner,
            info: ConnInfo {
                tcp,
                shared: Arc::new(ConnShared::new()),
            },
            metrics,
            open,
            read: FrameTracker::client(),
            write: FrameTracker::server(),
            handshake: Some(Box::pin(tokio::time::sleep(limits.handshake_timeout))),
            idle_timeout: limits.idle_timeout,
            idle: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            age: limits
                .connection_age
                .map(|age| Box::pin(tokio::time::sleep_until(now + age.max))),
            drain_grace: limits
                .connection_age
                .map_or(limits.drain_grace, |age| age.grace),
            drain: None,
            ping: PingPolicy::new(limits.ping_min_interval, limits.ping_permit_without_stream),
            last_client_stream: 0,
            out: Vec::new(),
            out_pos: 0,
            state: State::Open,
            reason: CloseReason::Other,
        }
    }

    /// Queues a GOAWAY and starts the drain deadline.
    fn go_away(&mut self, frame: Vec<u8>, reason: CloseReason, state: State, grace: Duration) {
        tracing::debug!(peer = ?self.info.tcp.remote_addr, reason = reason.as_str(), "GOAWAY");
        self.out = frame;
        self.out_pos = 0;
        self.state = state;
        self.reason = reason;
        self.drain = Some(Box::pin(tokio::time::sleep(grace)));
    }

    fn closed(&mut self, reason: CloseReason) -> io::Error {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.reason = reason;
        }
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("connection closed by the server: {}", self.reason.as_str()),
        )
    }

    /// Runs the timers; an error closes the connection.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.state == State::Closed {
            return Err(self.closed(self.reason));
        }
        if let Some(handshake) = &mut self.handshake
            && handshake.as_mut().poll(cx).is_ready()
        {
            tracing::debug!(peer = ?self.info.tcp.remote_addr, tls = self.inner.is_handshaking(), "handshake timeout");
            self.inner.timed_out();
            return Err(self.closed(CloseReason::HandshakeTimeout));
        }
        if self.state == State::Open
            && let Some(age) = &mut self.age
            && age.as_mut().poll(cx).is_ready()
        {
            let frame = frames::goaway(frames::MAX_STREAM_ID, frames::NO_ERROR, b"max_age");
            self.go_away(frame, CloseReason::Age, State::Draining, self.drain_grace);
        }
        while self.state == State::Open && self.idle.as_mut().poll(cx).is_ready() {
            let now = tokio::time::Instant::now();
            if self.info.shared.active() > 0 {
                self.idle.as_mut().reset(now + self.idle_timeout);
                continue;
            }
            let since = self.info.shared.idle_since();
            let deadline = tokio::time::Instant::from_std(since + self.idle_timeout);
            if deadline > now {
                self.idle.as_mut().reset(deadline);
                continue;
            }
            let frame = frames::goaway(frames::MAX_STREAM_ID, frames::NO_ERROR, b"max_idle");
            self.go_away(frame, CloseReason::Idle, State::Draining, self.drain_grace);
        }
        if let Some(drain) = &mut self.drain
            && drain.as_mut().poll(cx).is_ready()
        {
            return Err(self.closed(self.reason));
        }
        if let Poll::Ready(Err(err)) = self.flush_out(cx) {
            return Err(err);
        }
        Ok(())
    }

    /// Writes the queued frame if hyper is between two frames.
    fn flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.is_empty() || !self.write.at_boundary() {
            return Poll::Ready(Ok(()));
        }
        while self.out_pos < self.out.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.out_pos += n,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Checks the connection, then writes the queued frame first if hyper
    /// is between two frames, so hyper's bytes never follow half of ours.
    fn ready_to_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        self.flush_out(cx)
    }

    /// Follows what the client sent.
    fn on_read(&mut self, bytes: &[u8], cx: &mut Context<'_>) {
        let mut settings = false;
        let mut pings = 0usize;
        let mut last_stream = self.last_client_stream;
        self.read.feed(bytes, |h| match h.kind {
            kind::SETTINGS => settings = true,
            kind::HEADERS => last_stream = last_stream.max(h.stream),
            _ if h.is_ping_request() => pings += 1,
            _ => {}
        });
        self.last_client_stream = last_stream;
        if settings && self.read.preface_done() && self.handshake.take().is_some() {
            // Once, before hyper reads the first request in these bytes.
            if let Some(subject) = self.inner.peer_subject() {
                let _ = self.info.shared.client_subject.set(subject);
            }
        }
        let now = Instant::now();
        let active = self.info.shared.active();
        for _ in 0..pings {
            if self.state != State::Closing && self.ping.on_ping(now, active) {
                tracing::debug!(peer = ?self.info.tcp.remote_addr, "too many pings");
                let frame = frames::goaway(
                    self.last_client_stream,
                    frames::ENHANCE_YOUR_CALM,
                    b"too_many_pings",
                );
                self.go_away(
                    frame,
                    CloseReason::PingPolicy,
                    State::Closing,
                    PING_CLOSE_GRACE,
                );
                // Polled again at once, to write the GOAWAY and close.
                cx.waker().wake_by_ref();
            }
        }
    }

    /// Follows what the server sent.
    fn on_write(&mut self, bytes: &[u8]) {
        let mut data = false;
        self.write.feed(bytes, |h| {
            data |= h.kind == kind::DATA || h.kind == kind::HEADERS;
        });
        if data {
            self.ping.server_sent_data();
        }
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.close(self.reason);
    }
}

impl Connected for ConnIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        if this.state == State::Closing && this.out.is_empty() {
            // The GOAWAY is out: read and drop what the client still sends
            // until it closes or the grace ends, so the close is a FIN after
            // the GOAWAY, not a reset that could discard it.
            let mut scratch = [0u8; 4096];
            loop {
                let mut sink = ReadBuf::new(&mut scratch);
                match Pin::new(&mut this.inner).poll_read(cx, &mut sink) {
                    Poll::Ready(Ok(())) if sink.filled().is_empty() => {
                        return Poll::Ready(Err(this.closed(this.reason)));
                    }
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.on_read(&buf.filled()[before..], cx);
        }
        polled
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.ready_to_write(cx))?;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.on_write(&buf[..n]);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.ready_to_write(cx))?;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            // h2 hands a frame header and its payload as separate slices:
            // one writev, as without this wrapper.
            let mut left = n;
            for buf in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(buf.len());
                this.on_write(&buf[..take]);
                left -= take;
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let _ = this.flush_out(cx);
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
