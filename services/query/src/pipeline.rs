//! GetPipelineStats: throughput, backlog and latency of the whole pipeline.

use testbed_proto::v1::PipelineStats;

use crate::aggregate::{self, Fields};
use crate::error::QueryError;
use crate::percentiles::Histogram;
use crate::store::Reader;
use crate::time::{Window, timestamp_ms};

/// The pipeline's figures at the end of `window`.
///
/// - `ingested`, `processed`, `duplicates`, `dead_lettered`: the store's
///   per-partition counters, summed. The store keeps them as running totals
///   (since the log was created), not per minute, so they are not limited
///   to the window.
/// - `backlog`: appended and not yet processed or dead-lettered, now.
/// - `pending`: delivered and not yet acknowledged entries, now.
/// - `processing_rate`: events counted in the end-to-end histograms of the
///   window's minutes, per second of the window.
/// - `end_to_end_latency`: percentiles of those histograms (append to
///   processed, on the store's clock).
pub async fn pipeline_stats(reader: &Reader, window: Window) -> Result<PipelineStats, QueryError> {
    let keys: Vec<String> = reader
        .partitions()
        .flat_map(|p| window.minutes().map(move |m| (p, m)))
        .map(|(p, m)| reader.keys().e2e(p, m))
        .collect();
    let (parts, hashes) = tokio::try_join!(reader.partition_figures(), reader.hashes(&keys))?;

    let mut stats = PipelineStats::default();
    for (figures, pending) in &parts {
        stats.ingested += figures.ingested;
        stats.processed += figures.processed;
        stats.duplicates += figures.duplicates;
        stats.dead_lettered += figures.dead_lettered;
        stats.backlog += figures.backlog();
        stats.pending += pending.entries;
    }
    let mut e2e = Histogram::default();
    for (key, hash) in keys.iter().zip(&hashes) {
        aggregate::add_histogram(&Fields::new(key, hash), &mut e2e)?;
    }
    let seconds = window.duration.as_secs_f64();
    stats.processing_rate = if seconds > 0.0 {
        e2e.total() as f64 / seconds
    } else {
        0.0
    };
    stats.end_to_end_latency = Some(e2e.percentiles());
    stats.time = Some(timestamp_ms(window.end_ms));
    Ok(stats)
}
