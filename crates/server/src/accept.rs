//! [`Incoming`]: the accept loop, with backoff on exhaustion and the
//! connection cap.
//!
//! tonic's own `TcpIncoming` retries a failed `accept` at once: when the
//! process is out of descriptors (EMFILE) the listen socket stays readable,
//! so the loop spins a core for as long as the flood lasts. Here a failure
//! of that kind (EMFILE, ENFILE, ENOBUFS, ENOMEM) waits before the next
//! accept, 5 ms doubling to 1 s (Go's net/http and grpc-go do the same),
//! is counted in `server_accept_errors_total{kind}` and logged at most once
//! per [`LOG_EVERY`]. A success resets the delay, so connections are served
//! again within a second of descriptors freeing up.
//!
//! Past `--max-connections` open connections, a new one takes one of the
//! `--reserved-connections` slots, where it lives 2 s at most (room for a
//! kubelet probe: [`Limits::reserved`]); past those too it is closed right
//! after accept and counted (`server_connections_refused_total`): the
//! descriptors it would hold stay free for Redis, OTLP and `/metrics`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use tokio::net::TcpListener;
use tokio::time::Sleep;

use crate::conn::ConnIo;
use crate::conn_metrics::ConnMetrics;
use crate::limits::Limits;
use crate::tls::TlsServer;

/// First wait after a resource failure.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(5);
/// Longest wait.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one warning per this long; the others are counted in it.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Connections refused over the cap in one poll before yielding to other
/// tasks.
const REFUSE_BUDGET: usize = 128;

/// Linux errno values of the failures that mean "out of a resource, wait".
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
const ENOBUFS: i32 = 105;
const ENOMEM: i32 = 12;

/// The `kind` label of an accept failure, and whether it is a resource
/// exhaustion to back off from (others, such as ECONNABORTED, concern one
/// connection only).
pub fn classify(err: &io::Error) -> (&'static str, bool) {
    match err.raw_os_error() {
        Some(EMFILE) => ("emfile", true),
        Some(ENFILE) => ("enfile", true),
        Some(ENOBUFS) => ("enobufs", true),
        Some(ENOMEM) => ("enomem", true),
        _ if err.kind() == io::ErrorKind::OutOfMemory => ("enomem", true),
        _ => ("other", false),
    }
}

/// The next backoff delay after `delay`.
pub fn next_delay(delay: Duration) -> Duration {
    (delay * 2).min(BACKOFF_MAX)
}

/// Accepted connections, each wrapped in [`ConnIo`]; never yields an error.
#[derive(Debug)]
pub struct Incoming {
    listener: TcpListener,
    limits: Limits,
    /// TLS of every connection; none: plaintext.
    tls: Option<Arc<TlsServer>>,
    metrics: ConnMetrics,
    open: Arc<AtomicUsize>,
    /// Connections in reserved slots (past the cap, short-lived).
    reserved: Arc<AtomicUsize>,
    backoff: Option<Pin<Box<Sleep>>>,
    delay: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl Incoming {
    /// Accepts on `listener` under `limits`, each connection over TLS when
    /// `tls` is given (its handshake done by [`ConnIo`], after the cap).
    pub fn new(
        listener: TcpListener,
        limits: Limits,
        tls: Option<Arc<TlsServer>>,
        metrics: ConnMetrics,
    ) -> Self {
        Self {
            listener,
            limits,
            tls,
            metrics,
            open: Arc::new(AtomicUsize::new(0)),
            reserved: Arc::new(AtomicUsize::new(0)),
            backoff: None,
            delay: BACKOFF_INITIAL,
            last_log: None,
            unlogged: 0,
        }
    }

    fn log_failure(&mut self, err: &io::Error, kind: &'static str) {
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|last| now.duration_since(last) < LOG_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        tracing::warn!(
            error = %err,
            kind,
            backoff = ?self.delay,
            open_connections = self.open.load(Ordering::Relaxed),
            since_last_warning = self.unlogged,
            "accept failed; backing off (out of descriptors or memory)"
        );
        self.last_log = Some(now);
        self.unlogged = 0;
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = Result<ConnIo, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut refused = 0;
        loop {
            if let Some(backoff) = &mut this.backoff {
                if backoff.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.backoff = None;
            }
            match this.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok((stream, _peer))) => {
                    this.delay = BACKOFF_INITIAL;
                    let (count, limits) =
                        if this.open.load(Ordering::Acquire) < this.limits.max_connections {
                            (&this.open, this.limits.clone())
                        } else if this.reserved.load(Ordering::Acquire)
                            < this.limits.reserved_connections
                        {
                            (&this.reserved, this.limits.reserved())
                        } else {
                            this.metrics.refused.add(1, &[]);
                            drop(stream);
                            refused += 1;
                            if refused >= REFUSE_BUDGET {
                                cx.waker().wake_by_ref();
                                return Poll::Pending;
                            }
                            continue;
                        };
                    // No per-connection Nagle delay: acks are small and latency-bound.
                    let _ = stream.set_nodelay(true);
                    count.fetch_add(1, Ordering::AcqRel);
                    this.metrics.accepted.add(1, &[]);
                    this.metrics.open.add(1, &[]);
                    let io = ConnIo::new(
                        stream,
                        this.tls.as_deref(),
                        &limits,
                        this.metrics.clone(),
                        Arc::clone(count),
                    );
                    return Poll::Ready(Some(Ok(io)));
                }
                Poll::Ready(Err(err)) => {
                    let (kind, exhausted) = classify(&err);
                    this.metrics
                        .accept_errors
                        .add(1, &[KeyValue::new("kind", kind)]);
                    if exhausted {
                        this.log_failure(&err, kind);
                        this.backoff = Some(Box::pin(tokio::time::sleep(this.delay)));
                        this.delay = next_delay(this.delay);
                    } else {
                        tracing::debug!(error = %err, "accept failed for one connection");
                        refused += 1;
                        if refused >= REFUSE_BUDGET {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Descriptor and memory exhaustion back off; other failures do not.
    #[test]
    fn classifies_exhaustion() {
        for (errno, kind) in [
            (24, "emfile"),
            (23, "enfile"),
            (105, "enobufs"),
            (12, "enomem"),
        ] {
            assert_eq!(classify(&io::Error::from_raw_os_error(errno)), (kind, true));
        }
        // ECONNABORTED
        assert_eq!(
            classify(&io::Error::from_raw_os_error(103)),
            ("other", false)
        );
    }

    /// 5 ms doubling, capped at 1 s: eight steps reach the cap.
    #[test]
    fn backoff_doubles_to_a_second() {
        let mut d = BACKOFF_INITIAL;
        let mut steps = vec![d];
        while d < BACKOFF_MAX {
            d = next_delay(d);
            steps.push(d);
        }
        assert_eq!(steps.len(), 9);
        assert_eq!(steps[1], Duration::from_millis(10));
        assert_eq!(*steps.last().unwrap(), BACKOFF_MAX);
    }
}
