//! Desired state, faults and heartbeats, kept in the store so every
//! replica sees the same.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use testbed_proto::v1::{ControlState, Fault, WorkerInfo};
use testbed_stream::AggregateStore as _;
use testbed_stream::{AnyLog, EventLog as _, StoreError};

use crate::control::faults::expired;

/// The desired state as stored (`None` concurrency: each replica's own).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// Consumption paused.
    pub paused: bool,
    /// Why, as given to Pause.
    pub pause_reason: String,
    /// Per-worker concurrency set by SetConcurrency.
    pub concurrency: Option<u32>,
}

/// Control state in the store.
#[derive(Debug, Clone)]
pub struct ControlStore {
    log: AnyLog,
}

fn now_ms(now: SystemTime) -> f64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64)
}

impl ControlStore {
    /// Control state kept in `log`'s store.
    pub fn new(log: AnyLog) -> Self {
        Self { log }
    }

    /// The desired state.
    pub async fn desired(&self) -> Result<Desired, StoreError> {
        let key = self.log.keys().control_desired();
        let fields = self
            .log
            .read_hashes(&[key])
            .await?
            .pop()
            .unwrap_or_default();
        let get = |name: &str| {
            fields
                .iter()
                .find(|(f, _)| f == name)
                .map(|(_, v)| v.as_str())
        };
        Ok(Desired {
            paused: get("paused") == Some("1"),
            pause_reason: get("pause_reason").unwrap_or_default().to_owned(),
            concurrency: get("concurrency").and_then(|c| c.parse().ok()),
        })
    }

    /// Sets pause (with its reason).
    pub async fn set_paused(&self, paused: bool, reason: &str) -> Result<(), StoreError> {
        let fields = [
            (
                "paused".to_owned(),
                if paused { "1" } else { "0" }.to_owned(),
            ),
            (
                "pause_reason".to_owned(),
                if paused {
                    reason.to_owned()
                } else {
                    String::new()
                },
            ),
        ];
        self.log
            .write_hash(&self.log.keys().control_desired(), &fields, None)
            .await
    }

    /// Sets the per-worker concurrency.
    pub async fn set_concurrency(&self, concurrency: u32) -> Result<(), StoreError> {
        let fields = [("concurrency".to_owned(), concurrency.to_string())];
        self.log
            .write_hash(&self.log.keys().control_desired(), &fields, None)
            .await
    }

    /// Active faults; expired ones are dropped (and removed from the store).
    pub async fn faults(&self, now: SystemTime) -> Result<Vec<Fault>, StoreError> {
        let key = self.log.keys().control_faults();
        let fields = self
            .log
            .read_hashes(std::slice::from_ref(&key))
            .await?
            .pop()
            .unwrap_or_default();
        let mut active = Vec::new();
        let mut gone = Vec::new();
        for (id, value) in fields {
            let fault = hex::decode(&value)
                .ok()
                .and_then(|b| Fault::decode(b.as_slice()).ok());
            match fault {
                Some(f) if !expired(&f, now) => active.push(f),
                _ => gone.push(id),
            }
        }
        if !gone.is_empty() {
            self.log.delete_hash_fields(&key, &gone).await?;
        }
        active.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(active)
    }

    /// Stores a validated fault.
    pub async fn add_fault(&self, fault: &Fault) -> Result<(), StoreError> {
        let fields = [(fault.id.clone(), hex::encode(fault.encode_to_vec()))];
        self.log
            .write_hash(&self.log.keys().control_faults(), &fields, None)
            .await
    }

    /// Removes the listed faults, or all when `ids` is empty; returns how
    /// many were active.
    pub async fn clear_faults(&self, ids: &[String], now: SystemTime) -> Result<u32, StoreError> {
        let targets: Vec<String> = if ids.is_empty() {
            self.faults(now).await?.into_iter().map(|f| f.id).collect()
        } else {
            ids.to_vec()
        };
        let removed = self
            .log
            .delete_hash_fields(&self.log.keys().control_faults(), &targets)
            .await?;
        Ok(removed as u32)
    }

    /// The desired state as the API reports it; `local_concurrency` stands
    /// in when no concurrency was set cluster-wide.
    pub async fn state(
        &self,
        local_concurrency: u32,
        now: SystemTime,
    ) -> Result<ControlState, StoreError> {
        let desired = self.desired().await?;
        Ok(ControlState {
            paused: desired.paused,
            concurrency: desired.concurrency.unwrap_or(local_concurrency),
            faults: self.faults(now).await?,
            pause_reason: desired.pause_reason,
        })
    }

    /// Records this worker's heartbeat; it disappears after `ttl` without
    /// a newer one.
    pub async fn heartbeat(
        &self,
        info: &WorkerInfo,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let keys = self.log.keys();
        let fields = [("info".to_owned(), hex::encode(info.encode_to_vec()))];
        self.log
            .write_hash(&keys.worker(&info.consumer_name), &fields, Some(ttl))
            .await?;
        self.log
            .zset_set(&keys.workers(), &info.consumer_name, now_ms(now))
            .await
    }

    /// Consumer names whose heartbeat is younger than `lapse` (read only:
    /// nothing is removed).
    pub async fn beating(
        &self,
        lapse: Duration,
        now: SystemTime,
    ) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let oldest = now_ms(now) - lapse.as_millis() as f64;
        Ok(self
            .log
            .read_zset(&self.log.keys().workers())
            .await?
            .into_iter()
            .filter(|(_, at)| *at >= oldest)
            .map(|(name, _)| name)
            .collect())
    }

    /// Live workers (heartbeat younger than `ttl`), by consumer name.
    pub async fn workers(
        &self,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Vec<WorkerInfo>, StoreError> {
        let keys = self.log.keys();
        let oldest = now_ms(now) - ttl.as_millis() as f64;
        self.log.zset_remove_below(&keys.workers(), oldest).await?;
        let names: Vec<String> = self
            .log
            .read_zset(&keys.workers())
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let hashes = self
            .log
            .read_hashes(&names.iter().map(|n| keys.worker(n)).collect::<Vec<_>>())
            .await?;
        let mut workers: Vec<WorkerInfo> = hashes
            .into_iter()
            .filter_map(|fields| {
                let (_, value) = fields.into_iter().find(|(f, _)| f == "info")?;
                WorkerInfo::decode(hex::decode(value).ok()?.as_slice()).ok()
            })
            .collect();
        workers.sort_by(|a, b| a.consumer_name.cmp(&b.consumer_name));
        Ok(workers)
    }
}
