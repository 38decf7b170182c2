//! Per-device queries: GetDeviceStats and ListDevices (TopDevices is
//! `top.rs`).

use testbed_proto::v1::{GetDeviceStatsResponse, ListDevicesResponse};

use crate::aggregate::{self, DeviceAcc, Fields};
use crate::error::QueryError;
use crate::index::IdMerge;
use crate::paging::{LabelFilter, encode_token};
use crate::store::Reader;
use crate::time::Window;

/// A device's labels, totals over `window` and one bucket per minute with
/// events. NOT_FOUND when the device's state hash is gone (never seen, or
/// nothing retained).
pub async fn device_stats(
    reader: &Reader,
    device: &str,
    window: Window,
) -> Result<GetDeviceStatsResponse, QueryError> {
    let p = reader.partition_of(device);
    let keys = reader.keys();
    let minutes: Vec<i64> = window.minutes().collect();
    // The state hash first, then one hash per minute: one batched read.
    let names: Vec<String> = std::iter::once(keys.device(p, device))
        .chain(minutes.iter().map(|&m| keys.device_minute(p, device, m)))
        .collect();
    let hashes = reader.hashes(&names).await?;
    let not_found = || QueryError::NotFound {
        kind: "device",
        id: device.to_owned(),
    };
    let (Some((state_key, minute_keys)), Some((state, minute_hashes))) =
        (names.split_first(), hashes.split_first())
    else {
        return Err(not_found());
    };
    let info = aggregate::device(device, &Fields::new(state_key, state))?.ok_or_else(not_found)?;

    let mut totals = DeviceAcc::default();
    let mut series = Vec::new();
    for ((&minute, key), hash) in minutes.iter().zip(minute_keys).zip(minute_hashes) {
        if hash.is_empty() {
            continue;
        }
        let acc = DeviceAcc::read(&Fields::new(key, hash))?;
        series.push(acc.bucket(minute));
        totals.merge(&acc);
    }
    Ok(GetDeviceStatsResponse {
        device: Some(info),
        totals: Some(totals.stats()),
        series,
    })
}

/// One page of devices after `after`, ordered by id, whose labels match
/// `filter`. `filter_text` is the request's filter, bound into the token.
///
/// Without a filter the page is read from the partitions' id indexes;
/// with one, from the postings of its rarest label pair (each pair's
/// count is one `ZCARD` per partition), and each candidate's state is
/// checked against every pair. Either way the ids come a page at a time
/// per partition (`index.rs`), devices whose state has expired are
/// skipped, and at most `--query-max-scan` devices are examined: past that
/// the page may hold fewer than `page_size` devices and its token resumes
/// after the last one examined.
pub async fn list_devices(
    reader: &Reader,
    page_size: usize,
    filter: &LabelFilter,
    filter_text: &str,
    after: Option<&str>,
) -> Result<ListDevicesResponse, QueryError> {
    let empty = || ListDevicesResponse {
        devices: Vec::new(),
        next_page_token: String::new(),
    };
    let Some(index) = index_of(reader, filter).await? else {
        return Ok(empty());
    };
    // One device past the page tells whether there is a next page, so the
    // last page never carries a token.
    let want = page_size + 1;
    let mut ids = IdMerge::new(reader, index, after, want);
    let budget = reader.max_scan().max(want);
    let mut page = Vec::with_capacity(want);
    let mut examined = 0;
    let mut last_examined: Option<String> = None;
    while page.len() < want && examined < budget {
        // Unfiltered, about what the page still needs (expired devices
        // aside); filtered, a read batch at a time.
        let mut n = want - page.len();
        if !filter.is_empty() {
            n = n.max(reader.batch());
        }
        let chunk = ids.next(n.min(budget - examined)).await?;
        if chunk.is_empty() {
            break;
        }
        examined += chunk.len();
        let states = reader.devices(&chunk).await?;
        for (id, state) in chunk.into_iter().zip(states) {
            last_examined = Some(id);
            if let Some(device) = state.filter(|d| filter.matches(&d.labels)) {
                page.push(device);
                if page.len() == want {
                    break;
                }
            }
        }
    }
    let mut next_page_token = String::new();
    if page.len() > page_size {
        page.truncate(page_size);
        if let Some(last) = page.last() {
            next_page_token = encode_token(filter_text, &last.device_id);
        }
    } else if !ids.exhausted()
        && let Some(last) = last_examined
    {
        // The scan budget ran out before the page filled: resume there.
        next_page_token = encode_token(filter_text, &last);
    }
    Ok(ListDevicesResponse {
        devices: page,
        next_page_token,
    })
}

/// The per-partition index a listing with `filter` reads: the id indexes
/// without a filter, else the postings of the pair with the fewest devices
/// over all partitions; `None` when that pair has none.
async fn index_of(
    reader: &Reader,
    filter: &LabelFilter,
) -> Result<Option<Vec<String>>, QueryError> {
    let keys = reader.keys();
    let per_pair: Vec<Vec<String>> = filter
        .pairs()
        .iter()
        .map(|(k, v)| {
            reader
                .partitions()
                .map(|p| keys.label_devices(p, k, v))
                .collect()
        })
        .collect();
    if per_pair.is_empty() {
        return Ok(Some(
            reader.partitions().map(|p| keys.device_ids(p)).collect(),
        ));
    }
    let all: Vec<String> = per_pair.iter().flatten().cloned().collect();
    let lens = reader.set_lens(&all).await?;
    let partitions = reader.partitions().len().max(1);
    let rarest = per_pair
        .into_iter()
        .zip(lens.chunks(partitions).map(|c| c.iter().sum::<u64>()))
        .min_by_key(|(_, total)| *total);
    Ok(rarest.and_then(|(keys, total)| (total > 0).then_some(keys)))
}

#[cfg(test)]
mod tests {
    use testbed_stream::{AggregateStore as _, AnyLog, EventLog as _, MemoryLog, StoreArgs};

    use super::*;
    use crate::QueryConfig;
    use crate::paging::decode_token;

    /// A memory log indexing `dev-0..dev-5`, whose `dev-3` state has
    /// expired; even devices are amd64, odd ones arm64.
    async fn indexed_devices(config: &QueryConfig) -> Reader {
        let log = AnyLog::Memory(MemoryLog::new(&StoreArgs::default()));
        for i in 0..6 {
            let id = format!("dev-{i}");
            let p = testbed_stream::partition_of(&id, log.partitions());
            log.zset_set(&log.keys().devices(p), &id, 1000.0)
                .await
                .unwrap();
            log.zset_set(&log.keys().device_ids(p), &id, 0.0)
                .await
                .unwrap();
            let arch = if i % 2 == 0 { "amd64" } else { "arm64" };
            log.zset_set(&log.keys().label_devices(p, "arch", arch), &id, 0.0)
                .await
                .unwrap();
            if i != 3 {
                let fields = [
                    ("seen".to_owned(), "60000".to_owned()),
                    ("labels".to_owned(), format!(r#"{{"arch":"{arch}"}}"#)),
                ];
                log.write_hash(&log.keys().device(p, &id), &fields, None)
                    .await
                    .unwrap();
            }
        }
        Reader::new(log, config)
    }

    async fn walk(reader: &Reader, page_size: usize, filter: &str) -> Vec<Vec<String>> {
        let parsed = LabelFilter::parse(filter).unwrap();
        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let after = decode_token(&token, filter).unwrap();
            let page = list_devices(reader, page_size, &parsed, filter, after.as_deref())
                .await
                .unwrap();
            pages.push(page.devices.into_iter().map(|d| d.device_id).collect());
            if page.next_page_token.is_empty() {
                return pages;
            }
            token = page.next_page_token;
        }
    }

    /// Pages walk the live devices in id order, skip the expired one, and
    /// the last page carries no token.
    #[tokio::test]
    async fn pages_skip_expired_devices() {
        let reader = indexed_devices(&QueryConfig::default()).await;
        assert_eq!(
            walk(&reader, 2, "").await,
            vec![
                vec!["dev-0".to_owned(), "dev-1".to_owned()],
                vec!["dev-2".to_owned(), "dev-4".to_owned()],
                vec!["dev-5".to_owned()],
            ]
        );
        assert_eq!(
            walk(&reader, 2, "arch=arm64").await,
            vec![vec!["dev-1".to_owned(), "dev-5".to_owned()]]
        );
        assert_eq!(
            walk(&reader, 5, "arch=riscv").await,
            vec![Vec::<String>::new()]
        );
    }

    /// A scan budget smaller than the page ends a filtered call early
    /// with the devices found and a token that resumes after the last one
    /// examined; walking the tokens still finds every match, once.
    #[tokio::test]
    async fn a_bounded_scan_resumes_where_it_stopped() {
        let config = QueryConfig {
            query_max_scan: 1,
            query_read_batch: 1,
            ..QueryConfig::default()
        };
        let reader = indexed_devices(&config).await;
        // Unfiltered, the budget is at least the page (+1).
        assert_eq!(
            walk(&reader, 2, "").await,
            vec![
                vec!["dev-0".to_owned(), "dev-1".to_owned()],
                vec!["dev-2".to_owned(), "dev-4".to_owned()],
                vec!["dev-5".to_owned()],
            ]
        );
        // arm64 postings: dev-1, dev-3 (expired), dev-5; a page of 1 reads
        // 2 candidates a call at most.
        assert_eq!(
            walk(&reader, 1, "arch=arm64").await,
            vec![vec!["dev-1".to_owned()], vec!["dev-5".to_owned()],]
        );
        // A pair nobody has answers at once, and two pairs AND.
        assert_eq!(
            walk(&reader, 3, "arch=arm64,zone=x").await,
            vec![Vec::<String>::new()]
        );
    }
}
