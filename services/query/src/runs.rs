//! GetRunStats: the delivery ledger of one simulator run.

use testbed_proto::v1::GetRunStatsResponse;

use crate::aggregate::{Fields, RunAcc, add_histogram};
use crate::error::QueryError;
use crate::percentiles::Histogram;
use crate::store::Reader;

/// The run's processed events per kind, summed over partitions. NOT_FOUND
/// when no partition holds a ledger for it (unknown run, or expired).
///
/// Per run, the pipeline keeps: processed counts per kind, the earliest
/// event time, the latest apply time and an end-to-end latency histogram
/// (worker, with the aggregates), duplicates (ingest, at append) and dead
/// letters (worker, with the dead-letter move); all in the same atomic
/// steps as the figures they belong to.
pub async fn run_stats(reader: &Reader, run_id: &str) -> Result<GetRunStatsResponse, QueryError> {
    let keys: Vec<String> = reader
        .partitions()
        .map(|p| reader.keys().run(p, run_id))
        .collect();
    let hashes = reader.hashes(&keys).await?;
    if hashes.iter().all(Vec::is_empty) {
        return Err(QueryError::NotFound {
            kind: "run",
            id: run_id.to_owned(),
        });
    }
    let mut run = RunAcc::default();
    for (key, hash) in keys.iter().zip(&hashes) {
        run.add(&Fields::new(key, hash))?;
    }
    let latency_keys: Vec<String> = reader
        .partitions()
        .map(|p| reader.keys().run_e2e(p, run_id))
        .collect();
    let mut latency = Histogram::default();
    for (key, hash) in latency_keys
        .iter()
        .zip(&reader.hashes(&latency_keys).await?)
    {
        add_histogram(&Fields::new(key, hash), &mut latency)?;
    }
    let time = |ms: Option<f64>| {
        ms.map(|ms| {
            testbed_proto::prost_types::Timestamp::from(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0.0) as u64),
            )
        })
    };
    Ok(GetRunStatsResponse {
        run_id: run_id.to_owned(),
        processed: run.processed,
        processed_gpu: run.gpu,
        processed_tokens: run.tokens,
        processed_metric: run.metric,
        duplicates: run.duplicates,
        dead_lettered: run.dead_lettered,
        end_to_end_latency: (latency.total() > 0).then(|| latency.percentiles()),
        first_event_time: time(run.first_event_ms),
        last_processed_time: time(run.last_processed_ms),
    })
}
