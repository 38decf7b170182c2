//! Every key name, in one place (the fields inside the aggregate keys are
//! in [`crate::aggregates`]).
//!
//! All keys one atomic step touches share the partition's hash tag
//! `{prefix:pN}`, so on Redis Cluster they live in one slot. Cross-partition
//! figures are summed at read time.
//!
//! Client-chosen ids (device, run) may contain `:` but never `/` or `#`,
//! so they are always the last `/`-separated part of a key: two different
//! ids can never name the same key.
//!
//! # Records
//! A key of the form `<container>#<record>` ([`record_parts`]) is a
//! *record*: to the [`crate::AggregateStore`] API a hash like any other, but the
//! Redis backend keeps it as one field `<record>` of the hash `<container>`
//! (a MessagePack map of the record's fields), its time to live the
//! container's. Thousands of small hashes merged in one apply then cost one
//! read and one write of the container instead of three commands each.
//! Records are written by `apply` and read by `read_hashes` (one record)
//! or `read_records` (every record of a container).

/// Key names of one testbed (one `--key-prefix`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The hash tag of partition `p`: `{prefix:pN}`.
    pub fn tag(&self, p: u32) -> String {
        format!("{{{}:p{p}}}", self.prefix)
    }

    /// The stream of partition `p`.
    pub fn stream(&self, p: u32) -> String {
        format!("{}:stream", self.tag(p))
    }

    /// The dead-letter stream of partition `p`.
    pub fn dead_letter(&self, p: u32) -> String {
        format!("{}:dlq", self.tag(p))
    }

    /// Pipeline counters of partition `p` (hash: ingested, processed,
    /// duplicates, dead_lettered).
    pub fn stats(&self, p: u32) -> String {
        format!("{}:stats", self.tag(p))
    }

    /// The version of partition `p`'s aggregates: a counter every apply
    /// and every prune of the partition increments, so that values read
    /// outside an atomic step can be checked unchanged inside it.
    pub fn version(&self, p: u32) -> String {
        format!("{}:version", self.tag(p))
    }

    /// Recently seen event ids of partition `p` (hash id -> 1) ...
    pub fn recent_ids(&self, p: u32) -> String {
        format!("{}:ids", self.tag(p))
    }

    /// ... and their arrival order (list), for eviction past the window.
    pub fn recent_order(&self, p: u32) -> String {
        format!("{}:ids:order", self.tag(p))
    }

    /// An idempotent producer's state in partition `p` (hash: `hi`, the
    /// newest sequence seen) ...
    pub fn producer(&self, p: u32, producer_id: &str) -> String {
        format!("{}:producer/{producer_id}", self.tag(p))
    }

    /// ... and its window of recent sequences (bitmap, bit `sequence mod
    /// window` set once that sequence was appended).
    pub fn producer_seen(&self, p: u32, producer_id: &str) -> String {
        format!("{}:producer/{producer_id}/seen", self.tag(p))
    }

    /// The token of the idempotent batch whose `XADD` stays, set and
    /// deleted within one `MULTI` of an append of partition `p` (never
    /// left behind).
    pub fn append_decision(&self, p: u32) -> String {
        format!("{}:append-decision", self.tag(p))
    }

    /// End-to-end latency histogram of partition `p` for the minute
    /// `minute` (Unix minutes) in which entries were appended.
    pub fn e2e(&self, p: u32, minute: i64) -> String {
        format!("{}:e2e:{minute}", self.tag(p))
    }

    /// A key of partition `p` named `rest` after its tag (tests use it for
    /// keys of their own).
    pub fn aggregate(&self, p: u32, rest: &str) -> String {
        format!("{}:{rest}", self.tag(p))
    }

    /// Per-device, per-minute aggregates (a record of the minute's
    /// container, [`Keys::device_minutes`]; fields in
    /// [`crate::aggregates::device_minute`]).
    pub fn device_minute(&self, p: u32, device: &str, minute: i64) -> String {
        format!("{}#{device}", self.device_minutes(p, minute))
    }

    /// The container of the device-minute records of partition `p` in
    /// `minute`: what rankings of devices read (`TopDevices`).
    pub fn device_minutes(&self, p: u32, minute: i64) -> String {
        format!("{}:dm/{minute}", self.tag(p))
    }

    /// The ranking of partition `p`'s devices by `metric` (one of
    /// [`crate::aggregates::top`]) in `minute`: a sorted set, member the
    /// device id, written in the same apply as the device-minute records
    /// and expiring with them; what `TopDevices` reads a few members of.
    pub fn top(&self, p: u32, metric: &str, minute: i64) -> String {
        format!("{}:top/{metric}/{minute}", self.tag(p))
    }

    /// Per-device state (a record of [`Keys::device_states`]; fields in
    /// [`crate::aggregates::device_state`]).
    pub fn device(&self, p: u32, device: &str) -> String {
        format!("{}#{device}", self.device_states(p))
    }

    /// The container of the device states of partition `p`; a state
    /// leaves it when its device leaves the [`Keys::devices`] index
    /// (`AggregateStore::prune_index`).
    pub fn device_states(&self, p: u32) -> String {
        format!("{}:dev", self.tag(p))
    }

    /// Devices ingest admitted to the partition under its cap on tracked
    /// devices (sorted set, score: Unix ms last admitted); members leave it
    /// a `--retention` after they were last admitted.
    pub fn admitted(&self, p: u32) -> String {
        format!("{}:admitted", self.tag(p))
    }

    /// Devices of the partition by last-seen time (sorted set, score Unix ms).
    pub fn devices(&self, p: u32) -> String {
        format!("{}:devices", self.tag(p))
    }

    /// Devices of the partition by id (sorted set, every score 0, so that
    /// `ZRANGEBYLEX ... LIMIT` reads a page in id order); members leave it
    /// with the [`Keys::devices`] index they are pruned from.
    pub fn device_ids(&self, p: u32) -> String {
        format!("{}:device-ids", self.tag(p))
    }

    /// The devices of partition `p` that carried label `key` = `value`
    /// (sorted set, every score 0, read like [`Keys::device_ids`]): the
    /// postings of one label pair. Key and value are hex-encoded, so any
    /// text (`#`, `/`, `=` included) names one key and never a record.
    pub fn label_devices(&self, p: u32, key: &str, value: &str) -> String {
        format!("{}{}/{}", self.label_prefix(p), hex(key), hex(value))
    }

    /// What every [`Keys::label_devices`] of partition `p` starts with.
    pub fn label_prefix(&self, p: u32) -> String {
        format!("{}:label/", self.tag(p))
    }

    /// Token usage per minute (hash; fields in [`crate::aggregates::tokens`]).
    pub fn tokens_minute(&self, p: u32, minute: i64) -> String {
        format!("{}:tok:m:{minute}", self.tag(p))
    }

    /// Delivery ledger of a simulator run in partition `p` (hash; fields in
    /// [`crate::aggregates::run`]).
    pub fn run(&self, p: u32, run_id: &str) -> String {
        format!("{}:run/{run_id}", self.tag(p))
    }

    /// The tag of the control keys (desired state, faults, heartbeats):
    /// one slot of their own, outside every partition.
    fn control_tag(&self) -> String {
        format!("{{{}:control}}", self.prefix)
    }

    /// The settings every process on this prefix must agree on (hash:
    /// partitions, producer_window, layout), recorded by the first one.
    pub fn settings(&self) -> String {
        format!("{}:settings", self.control_tag())
    }

    /// Desired worker state (hash: paused, pause_reason, concurrency).
    pub fn control_desired(&self) -> String {
        format!("{}:desired", self.control_tag())
    }

    /// Active faults (hash: fault id -> encoded `testbed.v1.Fault`).
    pub fn control_faults(&self) -> String {
        format!("{}:faults", self.control_tag())
    }

    /// Live workers by last heartbeat (sorted set, score Unix ms).
    pub fn workers(&self) -> String {
        format!("{}:workers", self.control_tag())
    }

    /// One worker's heartbeat (hash, expires when the worker stops beating).
    pub fn worker(&self, consumer: &str) -> String {
        format!("{}:worker:{consumer}", self.control_tag())
    }

    /// End-to-end latency histogram of a run (hash: bucket -> events).
    pub fn run_e2e(&self, p: u32, run_id: &str) -> String {
        format!("{}:run/{run_id}/e2e", self.tag(p))
    }

    /// The consumer group name.
    pub fn group(&self) -> &'static str {
        "workers"
    }
}

/// Lowercase hex of the bytes of `text`.
fn hex(text: &str) -> String {
    use std::fmt::Write as _;
    text.bytes().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The version key (see [`Keys::version`]) of the partition `key` belongs
/// to, `None` if `key` has no partition hash tag.
pub fn version_of(key: &str) -> Option<String> {
    let end = key.find('}')?;
    let tag = key.get(..=end).filter(|t| t.starts_with('{'))?;
    Some(format!("{tag}:version"))
}

/// The container and the record of a record key (`<container>#<record>`;
/// see the module docs), `None` for any other key.
pub fn record_parts(key: &str) -> Option<(&str, &str)> {
    key.split_once('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids containing `:` cannot collide with another id's keys.
    #[test]
    fn ids_never_collide() {
        let k = Keys::new("tb");
        assert_ne!(k.device(0, "x:m:5"), k.device_minute(0, "x", 5));
        assert_ne!(k.device(0, "a/b"), k.device(0, "a"));
        assert_eq!(k.device_minute(1, "d", 7), "{tb:p1}:dm/7#d");
    }

    /// Every per-partition key carries the same hash tag.
    #[test]
    fn keys_share_the_partition_tag() {
        let k = Keys::new("tb");
        for key in [
            k.stream(3),
            k.stats(3),
            k.recent_ids(3),
            k.e2e(3, 7),
            k.aggregate(3, "x"),
        ] {
            assert!(key.starts_with("{tb:p3}:"), "{key}");
        }
    }

    /// Label postings are plain keys of the partition, one per pair,
    /// whatever the text of the label.
    #[test]
    fn label_postings_are_unambiguous() {
        let k = Keys::new("tb");
        assert_eq!(
            k.label_devices(2, "arch", "arm64"),
            "{tb:p2}:label/61726368/61726d3634"
        );
        assert_ne!(
            k.label_devices(0, "a=b", "c"),
            k.label_devices(0, "a", "b=c")
        );
        assert_eq!(record_parts(&k.label_devices(0, "a#b", "#")), None);
        assert_eq!(k.device_ids(1), "{tb:p1}:device-ids");
    }

    /// Device-minutes and device states are records; other keys are not.
    #[test]
    fn device_minutes_are_records() {
        let k = Keys::new("tb");
        assert_eq!(
            record_parts(&k.device_minute(3, "gpu:7", 42)),
            Some(("{tb:p3}:dm/42", "gpu:7"))
        );
        assert_eq!(
            record_parts(&k.device(3, "gpu:7")),
            Some(("{tb:p3}:dev", "gpu:7"))
        );
        assert_eq!(record_parts(&k.stats(3)), None);
        assert_eq!(k.top(3, "n", 42), "{tb:p3}:top/n/42");
        assert_eq!(record_parts(&k.top(3, "n", 42)), None);
    }
}
