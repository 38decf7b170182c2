//! The embedded log's hashes and sorted sets (the aggregates, the device
//! indexes, the control state) with Redis' expiry, and how an apply's
//! [`Op`]s change them. Uses nothing else of the embedded log.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::model::Op;

#[derive(Debug, Default)]
pub(super) struct Kv {
    pub(super) hashes: HashMap<String, HashMap<String, String>>,
    /// Members kept in byte order, so a range by member
    /// ([`crate::kv::AggregateStore::zset_range_lex`]) costs the page, as in Redis.
    pub(super) zsets: HashMap<String, BTreeMap<String, f64>>,
    pub(super) expiry: HashMap<String, Instant>,
}

impl Kv {
    pub(super) fn purge(&mut self, key: &str) {
        if self.expiry.get(key).is_some_and(|at| *at <= Instant::now()) {
            self.expiry.remove(key);
            self.hashes.remove(key);
            self.zsets.remove(key);
        }
    }

    pub(super) fn hash(&mut self, key: &str) -> &mut HashMap<String, String> {
        self.purge(key);
        self.hashes.entry(key.to_owned()).or_default()
    }

    pub(super) fn apply(&mut self, keys: &[String], op: &Op) {
        let key = |i: &u16| keys.get(usize::from(*i)).map(String::as_str).unwrap_or("");
        match op {
            Op::HashIncr(k, f, by) => {
                let v = self
                    .hash(key(k))
                    .entry(f.clone())
                    .or_insert_with(|| "0".into());
                *v = (v.parse::<i64>().unwrap_or(0) + by).to_string();
            }
            Op::HashIncrFloat(k, f, by) => {
                let v = self
                    .hash(key(k))
                    .entry(f.clone())
                    .or_insert_with(|| "0".into());
                *v = (v.parse::<f64>().unwrap_or(0.0) + by).to_string();
            }
            Op::HashMin(k, f, x) | Op::HashMax(k, f, x) => {
                let min = matches!(op, Op::HashMin(..));
                let h = self.hash(key(k));
                let better = match h.get(f).and_then(|c| c.parse::<f64>().ok()) {
                    None => true,
                    Some(c) => (min && *x < c) || (!min && *x > c),
                };
                if better {
                    h.insert(f.clone(), x.to_string());
                }
            }
            Op::HashSet(k, f, v) => {
                self.hash(key(k)).insert(f.clone(), v.clone());
            }
            Op::HashSummary(k, f, delta) => {
                let h = self.hash(key(k));
                let base = h.get(f).and_then(|v| crate::model::parse_summary(v));
                let merged = crate::model::merge_summary(base, *delta);
                h.insert(f.clone(), crate::model::summary_text(&merged));
            }
            Op::ZIncr(k, m, by) => {
                let k = key(k);
                self.purge(k);
                *self
                    .zsets
                    .entry(k.to_owned())
                    .or_default()
                    .entry(m.clone())
                    .or_default() += by;
            }
            Op::ZMax(k, m, score) => {
                let k = key(k);
                self.purge(k);
                let zset = self.zsets.entry(k.to_owned()).or_default();
                let current = zset.entry(m.clone()).or_insert(*score);
                *current = current.max(*score);
            }
            Op::Expire(k, secs) => {
                self.expiry.insert(
                    key(k).to_owned(),
                    Instant::now() + Duration::from_secs(*secs),
                );
            }
        }
    }
}
