//! What an acknowledged append survives, as the Redis it talks to is set
//! up: read once at connect (`CONFIG GET appendonly appendfsync`) and
//! logged, with a warning when acknowledgements are not durable.
//!
//! A managed Redis may refuse or rename `CONFIG`: then that is logged and
//! nothing else changes. On Redis Cluster the answer is one node's (every
//! node should be set up alike).

#[allow(clippy::wildcard_imports)]
use super::*;

/// How Redis persists writes, and so what an acknowledged append survives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    /// `appendonly yes`, `appendfsync always`: every acknowledged append
    /// survives a crash of Redis or of its host.
    EveryWrite,
    /// `appendonly yes`, `appendfsync everysec`: a crash of Redis' host can
    /// lose up to about a second of acknowledged appends.
    EverySecond,
    /// `appendonly yes`, `appendfsync no`: the kernel decides when writes
    /// reach the disk (typically within 30 s).
    OsDecides,
    /// `appendonly no`: a Redis restart loses everything since the last
    /// RDB snapshot, if any.
    NoAppendOnlyFile,
}

impl Durability {
    /// From the two settings' values.
    pub fn of(appendonly: &str, appendfsync: &str) -> Self {
        match (appendonly, appendfsync) {
            ("yes", "always") => Self::EveryWrite,
            ("yes", "everysec") => Self::EverySecond,
            ("yes", _) => Self::OsDecides,
            _ => Self::NoAppendOnlyFile,
        }
    }

    /// What an acknowledged append survives, in a sentence.
    pub fn meaning(&self) -> &'static str {
        match self {
            Self::EveryWrite => "every acknowledged append survives a Redis crash",
            Self::EverySecond => {
                "a crash of Redis' host can lose up to about a second of acknowledged appends"
            }
            Self::OsDecides => {
                "a crash of Redis' host can lose acknowledged appends the kernel had not written yet"
            }
            Self::NoAppendOnlyFile => {
                "a Redis restart loses every acknowledged append since its last snapshot"
            }
        }
    }
}

impl RedisLog {
    /// Reads and logs how Redis persists writes; a warning unless every
    /// write is synced.
    pub(super) async fn log_durability(&self) {
        let reply: Result<Vec<String>, StoreError> = self
            .call("CONFIG GET", |mut c| async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("appendonly")
                    .arg("appendfsync")
                    .query_async(&mut c)
                    .await
            })
            .await;
        let pairs = match reply {
            Ok(pairs) => pairs,
            Err(err) => {
                tracing::info!(error = %err, "cannot read Redis' persistence settings (CONFIG GET); acknowledged appends are as durable as it is set up to make them");
                return;
            }
        };
        let get = |name: &str| {
            pairs
                .chunks(2)
                .find(|kv| kv.first().map(String::as_str) == Some(name))
                .and_then(|kv| kv.get(1).cloned())
                .unwrap_or_default()
        };
        let (appendonly, appendfsync) = (get("appendonly"), get("appendfsync"));
        let durability = Durability::of(&appendonly, &appendfsync);
        if durability == Durability::EveryWrite {
            tracing::info!(%appendonly, %appendfsync, "Redis persistence: {}", durability.meaning());
        } else {
            tracing::warn!(%appendonly, %appendfsync, "Redis persistence: {} (set appendonly yes and appendfsync always for durable acknowledgements)", durability.meaning());
        }
    }
}

#[cfg(test)]
mod durability_tests {
    use super::*;

    /// Each combination says what it means.
    #[test]
    fn settings_map_to_what_survives() {
        assert_eq!(Durability::of("yes", "always"), Durability::EveryWrite);
        assert_eq!(Durability::of("yes", "everysec"), Durability::EverySecond);
        assert_eq!(Durability::of("yes", "no"), Durability::OsDecides);
        assert_eq!(Durability::of("no", "always"), Durability::NoAppendOnlyFile);
        assert!(Durability::EverySecond.meaning().contains("a second"));
    }
}
