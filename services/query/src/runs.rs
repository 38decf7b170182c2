//! GetRunStats: the delivery ledger of one simulator run.

use testbed_proto::v1::GetRunStatsResponse;

use crate::aggregate::{Fields, RunAcc};
use crate::error::QueryError;
use crate::store::Reader;

/// The run's processed events per kind, summed over partitions. NOT_FOUND
/// when no partition holds a ledger for it (unknown run, or expired).
///
/// The worker keeps only processed counts per run today. Duplicates and
/// dead letters are counted per partition, not per run, and per-run
/// latency and first/last times are not recorded: `duplicates` and
/// `dead_lettered` are left 0 and `end_to_end_latency`,
/// `first_event_time` and `last_processed_time` unset rather than
/// estimated.
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
    Ok(GetRunStatsResponse {
        run_id: run_id.to_owned(),
        processed: run.processed,
        processed_gpu: run.gpu,
        processed_tokens: run.tokens,
        processed_metric: run.metric,
        duplicates: 0,
        dead_lettered: 0,
        end_to_end_latency: None,
        first_event_time: None,
        last_processed_time: None,
    })
}
