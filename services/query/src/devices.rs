//! Per-device queries: GetDeviceStats, ListDevices and TopDevices.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use testbed_proto::v1::{
    DeviceScore, GetDeviceStatsResponse, ListDevicesResponse, TopDevicesResponse, TopMetric,
};

use crate::aggregate::{self, DeviceAcc, Fields};
use crate::error::QueryError;
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
/// `filter`. Devices still indexed but whose state has expired are
/// skipped. `filter_text` is the request's filter, bound into the token.
pub async fn list_devices(
    reader: &Reader,
    page_size: usize,
    filter: &LabelFilter,
    filter_text: &str,
    after: Option<&str>,
) -> Result<ListDevicesResponse, QueryError> {
    let index: Vec<String> = reader
        .partitions()
        .map(|p| reader.keys().devices(p))
        .collect();
    let ids: BTreeSet<String> = reader
        .zsets(&index)
        .await?
        .into_iter()
        .flatten()
        .map(|(id, _)| id)
        .collect();
    let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
    let mut candidates = ids.range((start, Bound::Unbounded));

    // One device past the page tells whether there is a next page, so the
    // last page never carries a token.
    let mut page = Vec::with_capacity(page_size + 1);
    while page.len() <= page_size {
        let want = (page_size + 1 - page.len()).max(reader.batch());
        let chunk: Vec<String> = candidates.by_ref().take(want).cloned().collect();
        if chunk.is_empty() {
            break;
        }
        for device in reader.devices(&chunk).await?.into_iter().flatten() {
            if filter.matches(&device.labels) {
                page.push(device);
                if page.len() > page_size {
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
    }
    Ok(ListDevicesResponse {
        devices: page,
        next_page_token,
    })
}

/// Each device's statistics over `window`, from the device-minute
/// records of every partition and minute (one container read each).
async fn device_totals(
    reader: &Reader,
    window: Window,
) -> Result<HashMap<String, DeviceAcc>, QueryError> {
    let containers: Vec<String> = reader
        .partitions()
        .flat_map(|p| window.minutes().map(move |m| (p, m)))
        .map(|(p, m)| reader.keys().device_minutes(p, m))
        .collect();
    let mut totals: HashMap<String, DeviceAcc> = HashMap::new();
    for (container, records) in containers.iter().zip(reader.records(&containers).await?) {
        for (device, hash) in records {
            let acc = DeviceAcc::read(&Fields::new(container, &hash))?;
            match totals.get_mut(&device) {
                Some(total) => total.merge(&acc),
                None => {
                    totals.insert(device, acc);
                }
            }
        }
    }
    Ok(totals)
}

/// Orders by value, highest first, ties by device id, and keeps `limit`.
fn rank(values: HashMap<String, f64>, limit: usize) -> Vec<(String, f64)> {
    let mut ranked: Vec<(String, f64)> = values.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(limit);
    ranked
}

/// The `limit` devices with the highest `metric` over `window`: sums for
/// events and tokens, means (sum / samples) for the GPU metrics. Devices
/// without data for the metric are left out.
pub async fn top_devices(
    reader: &Reader,
    metric: TopMetric,
    window: Window,
    limit: usize,
) -> Result<TopDevicesResponse, QueryError> {
    if metric == TopMetric::Unspecified {
        return Err(QueryError::invalid("metric", "must be set"));
    }
    let values: HashMap<String, f64> = device_totals(reader, window)
        .await?
        .into_iter()
        .filter_map(|(device, acc)| acc.rank_value(metric).map(|v| (device, v)))
        .collect();
    let ranked = rank(values, limit);
    let ids: Vec<String> = ranked.iter().map(|(id, _)| id.clone()).collect();
    let states = reader.devices(&ids).await?;
    let devices = ranked
        .into_iter()
        .zip(states)
        .map(|((device_id, value), state)| DeviceScore {
            device_id,
            value,
            labels: state.map(|d| d.labels).unwrap_or_default(),
        })
        .collect();
    Ok(TopDevicesResponse { devices })
}

#[cfg(test)]
mod tests {
    use testbed_stream::{AggregateStore as _, AnyLog, EventLog as _, MemoryLog, StoreArgs};

    use super::*;
    use crate::QueryConfig;
    use crate::paging::decode_token;

    /// A memory log indexing `dev-0..dev-5`, whose `dev-3` state has
    /// expired; even devices are amd64, odd ones arm64.
    async fn indexed_devices() -> Reader {
        let log = AnyLog::Memory(MemoryLog::new(&StoreArgs::default()));
        for i in 0..6 {
            let id = format!("dev-{i}");
            let p = testbed_stream::partition_of(&id, log.partitions());
            log.zset_set(&log.keys().devices(p), &id, 1000.0)
                .await
                .unwrap();
            if i != 3 {
                let arch = if i % 2 == 0 { "amd64" } else { "arm64" };
                let fields = [
                    ("seen".to_owned(), "60000".to_owned()),
                    ("labels".to_owned(), format!(r#"{{"arch":"{arch}"}}"#)),
                ];
                log.write_hash(&log.keys().device(p, &id), &fields, None)
                    .await
                    .unwrap();
            }
        }
        Reader::new(log, &QueryConfig::default())
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
        let reader = indexed_devices().await;
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

    /// Highest first, ties by id, cut at the limit.
    #[test]
    fn ranking_order() {
        let values: HashMap<String, f64> = [("b", 5.0), ("a", 5.0), ("c", 9.0), ("d", 1.0)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let ranked = rank(values, 3);
        assert_eq!(
            ranked,
            vec![
                ("c".to_owned(), 9.0),
                ("a".to_owned(), 5.0),
                ("b".to_owned(), 5.0)
            ]
        );
    }
}
