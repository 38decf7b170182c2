//! The aggregate schema: every field name the worker writes and the query
//! reads, in one place, so the two cannot silently disagree (a renamed
//! field on one side would otherwise read as 0 on the other).
//!
//! [`crate::keys`] names the keys; this module names what is inside them
//! (and the store's own pipeline counters, [`stats`]).
//! The store moves these names as opaque strings, with one exception: its
//! append counts re-sent events in a run's ledger under
//! [`run::DUPLICATES`], in Rust ([`crate::MemoryLog`]) and in the Lua
//! scripts (a test checks the scripts use this name).

/// Fields of a device-minute record ([`crate::keys::Keys::device_minute`]).
pub mod device_minute {
    /// Events of any kind.
    pub const EVENTS: &str = "n";
    /// GPU samples.
    pub const GPU_COUNT: &str = "gpu.n";
    /// Token usage records.
    pub const TOKENS_COUNT: &str = "tok.n";
    /// Prompt tokens (sum).
    pub const PROMPT_TOKENS: &str = "tok.prompt";
    /// Completion tokens (sum).
    pub const COMPLETION_TOKENS: &str = "tok.completion";
    /// Metric samples (all names).
    pub const METRIC_COUNT: &str = "metric.n";

    /// GPU utilisation summary (see [`crate::Op::HashSummary`]).
    pub const GPU_UTIL: &str = "gpu.util";
    /// GPU memory used (bytes) summary.
    pub const GPU_MEM: &str = "gpu.mem";
    /// GPU temperature summary.
    pub const GPU_TEMP: &str = "gpu.temp";
    /// GPU power summary.
    pub const GPU_POWER: &str = "gpu.power";
    /// Token latency (seconds) summary.
    pub const TOKENS_LATENCY: &str = "tok.lat";

    const METRIC: &str = "metric:";
    const UNIT: &str = "unit:";

    /// The summary of metric `name`.
    pub fn metric(name: &str) -> String {
        format!("{METRIC}{name}")
    }

    /// The unit of metric `name` (a separate prefix, so that no metric
    /// name, dots included, can collide with another's unit).
    pub fn metric_unit(name: &str) -> String {
        format!("{UNIT}{name}")
    }

    /// The metric whose summary `field` is, if it is one.
    pub fn metric_of(field: &str) -> Option<&str> {
        field.strip_prefix(METRIC)
    }

    /// The metric whose unit `field` is, if it is one.
    pub fn unit_of(field: &str) -> Option<&str> {
        field.strip_prefix(UNIT)
    }
}

/// The rankings of devices kept per partition and minute
/// ([`crate::keys::Keys::top`]): one sorted set per metric named here,
/// member the device id, written by the worker's apply (atomically with
/// the device-minute record it summarises, so a replayed entry is counted
/// once, as everything else the apply writes) and read a few members at a
/// time by `TopDevices`.
pub mod top {
    /// Events of any kind in the minute: the score is their count
    /// (`ZINCRBY`), the record's [`super::device_minute::EVENTS`].
    pub const EVENTS: &str = "n";
    /// Tokens (prompt + completion) in the minute: the score is their sum
    /// (`ZINCRBY`), for devices with token records.
    pub const TOKENS: &str = "tok";
    /// GPU utilisation: the score is the minute's highest sample (`ZADD
    /// GT`), an upper bound of any mean over minutes that include it.
    pub const GPU_UTIL: &str = "gpu.util";
    /// GPU power: the minute's highest sample.
    pub const GPU_POWER: &str = "gpu.power";
    /// GPU temperature: the minute's highest sample.
    pub const GPU_TEMP: &str = "gpu.temp";
}

/// Fields of a device's state record ([`crate::keys::Keys::device`]).
pub mod device_state {
    /// Last seen, Unix ms (rounded to the second).
    pub const SEEN: &str = "seen";
    /// The device's labels, a JSON object of strings; pruning the device
    /// takes it out of the postings of each pair
    /// (`AggregateStore::prune_index`).
    pub const LABELS: &str = "labels";
}

/// Fields of a token-usage minute hash
/// ([`crate::keys::Keys::tokens_minute`]): per group (a model or a tenant)
/// `<kind>:<name>:<counter>` and `<kind>:<name>:lat:<bucket>`; a name may
/// itself hold colons, so readers split at the last ones.
pub mod tokens {
    /// The group kind of a model.
    pub const MODEL: &str = "model";
    /// The group kind of a tenant.
    pub const TENANT: &str = "tenant";
    /// Token usage records of the group.
    pub const REQUESTS: &str = "n";
    /// Prompt tokens (sum).
    pub const PROMPT: &str = "prompt";
    /// Completion tokens (sum).
    pub const COMPLETION: &str = "completion";
    /// The latency histogram's part of a field: `<group>:lat:<bucket>`.
    pub const LATENCY: &str = "lat";

    /// The prefix of a group's fields: `<kind>:<name>`.
    pub fn group(kind: &str, name: &str) -> String {
        format!("{kind}:{name}")
    }

    /// A counter of `group` ([`REQUESTS`], [`PROMPT`], [`COMPLETION`]).
    pub fn counter(group: &str, counter: &str) -> String {
        format!("{group}:{counter}")
    }

    /// A latency histogram bucket of `group`.
    pub fn latency_bucket(group: &str, bucket: u32) -> String {
        format!("{group}:{LATENCY}:{bucket}")
    }
}

/// Fields of a simulator run's delivery ledger, per partition
/// ([`crate::keys::Keys::run`]).
pub mod run {
    /// Events processed, all kinds.
    pub const PROCESSED: &str = "processed";
    /// Of them, GPU samples.
    pub const GPU: &str = "gpu";
    /// Of them, token usage records.
    pub const TOKENS: &str = "tokens";
    /// Of them, metrics.
    pub const METRIC: &str = "metric";
    /// Of them, events without a payload.
    pub const NONE: &str = "none";
    /// Re-sent events dropped as duplicates at append (written by the store).
    pub const DUPLICATES: &str = "duplicates";
    /// Events dead-lettered.
    pub const DEAD_LETTERED: &str = "dead_lettered";
    /// Earliest `observed_at` of the run's events, Unix ms.
    pub const FIRST_EVENT_MS: &str = "first_event_ms";
    /// Latest time one of its entries was applied, Unix ms.
    pub const LAST_PROCESSED_MS: &str = "last_processed_ms";
}

/// Fields of a partition's pipeline counters ([`crate::keys::Keys::stats`]),
/// the store's own: written by its append and apply steps (Rust and Lua),
/// read as [`crate::PartitionFigures`].
pub mod stats {
    /// Events appended.
    pub const INGESTED: &str = "ingested";
    /// Events applied.
    pub const PROCESSED: &str = "processed";
    /// Re-sent events dropped as duplicates at append.
    pub const DUPLICATES: &str = "duplicates";
    /// Events dead-lettered.
    pub const DEAD_LETTERED: &str = "dead_lettered";
    /// The epoch of the settings record this partition was last written
    /// under (not a counter: see `redis_log/settings.rs`).
    pub const EPOCH: &str = "epoch";
    /// Every counter, in [`crate::PartitionFigures`]' order.
    pub const ALL: [&str; 4] = [INGESTED, PROCESSED, DUPLICATES, DEAD_LETTERED];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metric and unit fields round-trip through their readers, and
    /// neither reads as the other.
    #[test]
    fn metric_fields_round_trip() {
        let field = device_minute::metric("fan.speed");
        assert_eq!(device_minute::metric_of(&field), Some("fan.speed"));
        assert_eq!(device_minute::unit_of(&field), None);
        let unit = device_minute::metric_unit("fan.speed");
        assert_eq!(device_minute::unit_of(&unit), Some("fan.speed"));
        assert_eq!(device_minute::metric_of(&unit), None);
    }

    /// The scripts write each pipeline counter under the schema's name
    /// (a renamed field on one side would read as 0 on the other).
    #[test]
    fn scripts_write_the_stats_fields() {
        let scripts = [
            include_str!("redis_log/append.lua"),
            include_str!("redis_log/append_producer.lua"),
            include_str!("redis_log/apply.lua"),
        ];
        let mut written = std::collections::BTreeSet::new();
        for script in scripts {
            for line in script.lines().filter(|l| l.contains("HINCRBY")) {
                if let Some(field) = line.split('\'').nth(3) {
                    written.insert(field.to_owned());
                }
            }
        }
        for field in stats::ALL {
            assert!(
                written.contains(field),
                "{field} never written: {written:?}"
            );
        }
    }

    /// The append scripts count a run's duplicates under the ledger's
    /// field name.
    #[test]
    fn scripts_count_run_duplicates_under_the_schema_name() {
        let field = format!("'{}'", run::DUPLICATES);
        for (name, script) in [
            ("append.lua", include_str!("redis_log/append.lua")),
            (
                "append_producer.lua",
                include_str!("redis_log/append_producer.lua"),
            ),
        ] {
            let run_writes: Vec<&str> = script
                .lines()
                .filter(|l| {
                    l.contains("HINCRBY") && !l.contains("KEYS[1]") && !l.contains("KEYS[4]")
                })
                .collect();
            assert!(!run_writes.is_empty(), "{name}: no run ledger write found");
            for line in run_writes {
                assert!(line.contains(&field), "{name}: {line}");
            }
        }
    }
}
