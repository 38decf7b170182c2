//! The tracing spans of an apply and of each entry, continuing the
//! producer's trace through the queue (`--queue-trace-mode`).

#[allow(clippy::wildcard_imports)]
use super::*;

impl Consumer {
    /// The span of one batch apply: linked to every entry's processing
    /// span; in `parent` mode a batch of one entry is its child, so a
    /// lightly loaded pipeline shows one unbroken trace.
    pub(super) fn apply_span(&self, batch: &[Decoded], events: u64) -> tracing::Span {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let parent = match (self.config.queue_trace_mode, batch) {
            (QueueTraceMode::Parent, [one]) => one.span.id(),
            _ => None,
        };
        let span = tracing::info_span!(
            parent: parent,
            "apply batch",
            otel.kind = "internal",
            messaging.system = "redis",
            messaging.batch.message_count = batch.len(),
            testbed.events = events,
        );
        for d in batch {
            let context = d.span.context().span().span_context().clone();
            if context.is_valid() {
                span.add_link(context);
            }
        }
        span
    }

    /// The processing span of `entry`, continuing (or linking to) the
    /// ingest span stored with it, per `--queue-trace-mode`.
    pub(super) fn entry_span(&self, entry: &Entry) -> tracing::Span {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let span = tracing::info_span!(
            "process entry",
            otel.kind = "consumer",
            messaging.system = "redis",
            messaging.operation.type = "process",
            messaging.destination.partition.id = entry.partition,
            messaging.message.id = %entry.id,
            messaging.batch.message_count = entry.events.len(),
        );
        let meta = EntryMeta::decode(entry.meta.as_slice()).unwrap_or_default();
        let upstream =
            testbed_telemetry::propagation::from_strings(&meta.traceparent, &meta.tracestate);
        let upstream_span = upstream.span().span_context().clone();
        if upstream_span.is_valid() {
            match self.config.queue_trace_mode {
                QueueTraceMode::Parent => {
                    let _ = span.set_parent(upstream);
                }
                QueueTraceMode::Link => span.add_link(upstream_span),
            }
        }
        span
    }
}
