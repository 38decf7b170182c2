//! WatchPipelineStats: a producer task per stream, feeding a bounded
//! channel.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use testbed_proto::v1::WatchPipelineStatsResponse;
use testbed_server::CancellationToken;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::pipeline::pipeline_stats;
use crate::store::Reader;
use crate::time::{Window, now_ms};

/// One item of the stream.
pub type WatchItem = Result<WatchPipelineStatsResponse, Status>;

/// The response stream of one WatchPipelineStats call. It owns its
/// producer task: dropping the stream (the client went away) aborts it,
/// even in the middle of a store read.
#[derive(Debug)]
pub struct WatchStream {
    inner: ReceiverStream<WatchItem>,
    producer: JoinHandle<()>,
}

impl WatchStream {
    /// Starts a producer that sends the pipeline's figures over `window`
    /// right away, then every `interval`, buffering at most `buffer`
    /// messages. It stops when the client leaves, when `shutdown` is
    /// cancelled (the stream then ends with OK), or after sending the
    /// error of a failed read (the stream then ends with that status).
    pub fn spawn(
        reader: Reader,
        interval: Duration,
        window: Duration,
        buffer: usize,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let producer = tokio::spawn(produce(reader, interval, window, tx, shutdown));
        Self {
            inner: ReceiverStream::new(rx),
            producer,
        }
    }
}

impl Stream for WatchStream {
    type Item = WatchItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchItem>> {
        Pin::new(&mut self.get_mut().inner).poll_next(cx)
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.producer.abort();
    }
}

async fn produce(
    reader: Reader,
    interval: Duration,
    window: Duration,
    tx: mpsc::Sender<WatchItem>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    // A slow store or client delays the next message rather than bursting
    // the missed ones.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // The first tick completes at once: one message right away.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tx.closed() => break,
            _ = ticks.tick() => {}
        }
        // Reserve before reading, so a client that does not keep up holds
        // the producer here instead of queueing stale figures.
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            permit = tx.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the client went away
            },
        };
        let stats = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            stats = pipeline_stats(&reader, Window::ending_at(now_ms(), window)) => stats,
        };
        match stats {
            Ok(stats) => permit.send(Ok(WatchPipelineStatsResponse { stats: Some(stats) })),
            Err(err) => {
                tracing::warn!(error = %err, "WatchPipelineStats read failed; ending the stream");
                permit.send(Err(Status::from(err)));
                break;
            }
        }
    }
    // Dropping `tx` ends the stream; after a shutdown, with OK.
}
