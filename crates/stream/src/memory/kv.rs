//! [`AggregateStore`] on the embedded log: the reads and writes of its
//! hashes and sorted sets (the query's TopDevices and ListDevices reads,
//! the device-index pruning, the control state) under [`MemoryLog`]'s lock.

use std::time::{Duration, Instant};

use crate::StoreError;
use crate::kv::{AggregateStore, HashFields, Prune};
use crate::memory::MemoryLog;

impl AggregateStore for MemoryLog {
    async fn read_zset(&self, key: &str) -> Result<Vec<(String, f64)>, StoreError> {
        let mut kv = self.kv();
        kv.purge(key);
        let mut members: Vec<(String, f64)> = kv
            .zsets
            .get(key)
            .map(|z| z.iter().map(|(m, s)| (m.clone(), *s)).collect())
            .unwrap_or_default();
        members.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        Ok(members)
    }

    async fn write_hash(
        &self,
        key: &str,
        fields: &[(String, String)],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let mut kv = self.kv();
        let hash = kv.hash(key);
        for (f, v) in fields {
            hash.insert(f.clone(), v.clone());
        }
        if let Some(ttl) = ttl {
            kv.expiry.insert(key.to_owned(), Instant::now() + ttl);
        }
        Ok(())
    }

    async fn delete_hash_fields(&self, key: &str, fields: &[String]) -> Result<u64, StoreError> {
        let mut kv = self.kv();
        let hash = kv.hash(key);
        Ok(fields.iter().filter(|f| hash.remove(*f).is_some()).count() as u64)
    }

    async fn zset_set(&self, key: &str, member: &str, score: f64) -> Result<(), StoreError> {
        let mut kv = self.kv();
        kv.purge(key);
        kv.zsets
            .entry(key.to_owned())
            .or_default()
            .insert(member.to_owned(), score);
        Ok(())
    }

    async fn zset_remove_below(&self, key: &str, score: f64) -> Result<u64, StoreError> {
        let mut kv = self.kv();
        kv.purge(key);
        let Some(z) = kv.zsets.get_mut(key) else {
            return Ok(0);
        };
        let before = z.len();
        z.retain(|_, s| *s >= score);
        Ok((before - z.len()) as u64)
    }

    async fn zset_range_lex(
        &self,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut kv = self.kv();
        kv.purge(key);
        let Some(z) = kv.zsets.get(key) else {
            return Ok(Vec::new());
        };
        let from = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        Ok(z.range::<str, _>((from, std::ops::Bound::Unbounded))
            .take(limit)
            .map(|(m, _)| m.clone())
            .collect())
    }

    async fn zset_top(&self, key: &str, limit: usize) -> Result<Vec<(String, f64)>, StoreError> {
        let mut kv = self.kv();
        kv.purge(key);
        let Some(z) = kv.zsets.get(key) else {
            return Ok(Vec::new());
        };
        // A whole-set sort: the embedded log is for small fleets; Redis
        // reads only the limit.
        let mut members: Vec<(String, f64)> = z.iter().map(|(m, s)| (m.clone(), *s)).collect();
        members.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        members.truncate(limit);
        Ok(members)
    }

    async fn zset_scores(
        &self,
        key: &str,
        members: &[String],
    ) -> Result<Vec<Option<f64>>, StoreError> {
        let mut kv = self.kv();
        kv.purge(key);
        let z = kv.zsets.get(key);
        Ok(members
            .iter()
            .map(|m| z.and_then(|z| z.get(m)).copied())
            .collect())
    }

    async fn zset_len(&self, key: &str) -> Result<u64, StoreError> {
        let mut kv = self.kv();
        kv.purge(key);
        Ok(kv.zsets.get(key).map_or(0, |z| z.len() as u64))
    }

    async fn prune_index(&self, prune: Prune<'_>) -> Result<u64, StoreError> {
        let mut kv = self.kv();
        kv.purge(prune.index);
        let Some(z) = kv.zsets.get_mut(prune.index) else {
            return Ok(0);
        };
        // In-process, a walk of the index costs no other caller a wait;
        // what leaves per call is bounded as in Redis.
        let mut gone: Vec<(f64, String)> = z
            .iter()
            .filter(|(_, s)| **s < prune.below)
            .map(|(m, s)| (*s, m.clone()))
            .collect();
        gone.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        gone.truncate(prune.limit);
        for (_, member) in &gone {
            z.remove(member);
        }
        for (_, member) in &gone {
            if let Some(ids) = kv.zsets.get_mut(prune.ids) {
                ids.remove(member);
            }
            let record = kv.hashes.remove(&format!("{}#{member}", prune.records));
            let labels: std::collections::BTreeMap<String, String> = record
                .as_ref()
                .and_then(|r| r.get(prune.labels))
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default();
            for (k, v) in labels {
                let key = self.inner.keys.label_devices(prune.partition, &k, &v);
                if let Some(set) = kv.zsets.get_mut(&key) {
                    set.remove(member);
                }
            }
        }
        Ok(gone.len() as u64)
    }

    async fn read_hashes(&self, keys: &[String]) -> Result<Vec<Vec<(String, String)>>, StoreError> {
        let mut kv = self.kv();
        Ok(keys
            .iter()
            .map(|key| {
                kv.purge(key);
                let mut fields: Vec<(String, String)> = kv
                    .hashes
                    .get(key)
                    .map(|h| h.iter().map(|(f, v)| (f.clone(), v.clone())).collect())
                    .unwrap_or_default();
                fields.sort();
                fields
            })
            .collect())
    }

    async fn read_records(&self, container: &str) -> Result<Vec<(String, HashFields)>, StoreError> {
        let mut kv = self.kv();
        // Records are hashes named `<container>#<record>` here.
        let prefix = format!("{container}#");
        let keys: Vec<String> = kv
            .hashes
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            kv.purge(&key);
            let Some(hash) = kv.hashes.get(&key).filter(|h| !h.is_empty()) else {
                continue;
            };
            let mut fields: Vec<(String, String)> =
                hash.iter().map(|(f, v)| (f.clone(), v.clone())).collect();
            fields.sort();
            out.push((key[prefix.len()..].to_owned(), fields));
        }
        out.sort();
        Ok(out)
    }
}
