//! GetTokenUsage: token usage per model or tenant.

use std::collections::BTreeMap;

use testbed_proto::v1::{GetTokenUsageResponse, TokenGroupBy, TokenUsageGroup};
use testbed_stream::aggregates::tokens;

use crate::aggregate::{self, Fields, TokenGroupAcc};
use crate::error::QueryError;
use crate::store::Reader;
use crate::time::Window;

/// Requests, prompt and completion tokens and latency percentiles of each
/// model (or tenant) seen in `window`, ordered by name.
pub async fn token_usage(
    reader: &Reader,
    group_by: TokenGroupBy,
    window: Window,
) -> Result<GetTokenUsageResponse, QueryError> {
    let prefix = match group_by {
        TokenGroupBy::Tenant => tokens::TENANT,
        TokenGroupBy::Model | TokenGroupBy::Unspecified => tokens::MODEL,
    };
    let keys: Vec<String> = reader
        .partitions()
        .flat_map(|p| window.minutes().map(move |m| (p, m)))
        .map(|(p, m)| reader.keys().tokens_minute(p, m))
        .collect();
    let hashes = reader.hashes(&keys).await?;
    let mut groups: BTreeMap<String, TokenGroupAcc> = BTreeMap::new();
    for (key, hash) in keys.iter().zip(&hashes) {
        aggregate::add_token_groups(&Fields::new(key, hash), prefix, &mut groups)?;
    }
    Ok(GetTokenUsageResponse {
        groups: groups
            .into_iter()
            .map(|(key, g)| TokenUsageGroup {
                key,
                requests: g.requests,
                prompt_tokens: g.prompt,
                completion_tokens: g.completion,
                latency: Some(g.latency.percentiles()),
            })
            .collect(),
    })
}
