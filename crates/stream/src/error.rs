//! What can go wrong talking to the log.

/// Errors of [`crate::EventLog`] operations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time; the operation
    /// may be retried (for an append: with the same events).
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// The store answered something this version cannot understand.
    #[error("event store returned unexpected data: {0}")]
    Protocol(String),
    /// An idempotent producer's batch sequence is older than the window of
    /// sequences the partition remembers for it: whether that batch was
    /// appended before cannot be told, so it is refused rather than risk a
    /// double count. Not retryable as it is.
    #[error(
        "sequence {sequence} of producer {producer_id:?} is older than the {window} sequences remembered (newest {highest}); whether it was appended cannot be told"
    )]
    StaleSequence {
        /// The producer.
        producer_id: String,
        /// The refused sequence.
        sequence: u64,
        /// The newest sequence the partition has seen from the producer.
        highest: u64,
        /// The producer window (`--producer-window`).
        window: u64,
    },
    /// The append reached the master but not `--redis-wait-replicas`
    /// replicas within `--redis-wait-timeout`: it is not acknowledged
    /// (a failover now could lose it); the retry is deduplicated.
    #[error(
        "the append reached {replicated} of the {wanted} replicas required (--redis-wait-replicas) within {timeout:?}; it is not acknowledged"
    )]
    NotReplicated {
        /// `--redis-wait-replicas`.
        wanted: u32,
        /// Replicas `WAIT` confirmed.
        replicated: u32,
        /// `--redis-wait-timeout`.
        timeout: std::time::Duration,
    },
    /// The store's flags ask for what this backend cannot do (found when
    /// the log is made, before anything is served), or Redis refuses the
    /// credentials they give.
    #[error("invalid store settings: {0}")]
    Config(String),
    /// A setting every process sharing the key prefix must agree on differs
    /// from the value the first process recorded in the store. Not
    /// retryable: the process's flags must change (or the prefix be reset).
    #[error(
        "{flag} {ours} disagrees with {stored}, recorded in the store by the first process on this key prefix: every ingest, worker and query sharing a --key-prefix must use the same value. Set {flag} {stored}, or change it on purpose as README's operations section describes (drain, then reset the prefix)"
    )]
    Disagreement {
        /// The flag, e.g. `--partitions`.
        flag: &'static str,
        /// This process's value.
        ours: String,
        /// The recorded value.
        stored: String,
    },
}

/// Replies of a Redis that is there but cannot serve the command right
/// now: loading its data after a restart, a cluster healing or failing
/// over, a replica just demoted, a slot moved.
fn transient(kind: redis::ServerErrorKind) -> bool {
    use redis::ServerErrorKind as K;
    matches!(
        kind,
        K::BusyLoading
            | K::TryAgain
            | K::ClusterDown
            | K::MasterDown
            | K::ReadOnly
            | K::Moved
            | K::Ask
    )
}

impl StoreError {
    /// Classifies a Redis error: connection and timeout problems, and a
    /// Redis that cannot serve yet (loading after a restart, a cluster
    /// failing over; also inside a transaction or pipeline, which Redis
    /// then aborts), are `Unavailable`, retryable; anything else (a script
    /// error, a wrong type) is a protocol problem.
    pub(crate) fn from_redis(err: redis::RedisError) -> Self {
        if err.kind() == redis::ErrorKind::AuthenticationFailed {
            // Not transient: the credentials are wrong until someone
            // changes them (--redis-username, --redis-password-file).
            return StoreError::Config(format!("Redis refused the credentials: {err}"));
        }
        let cannot_serve_yet = err
            .clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, e)| e.kind().is_some_and(transient)));
        if cannot_serve_yet
            || err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error()
        {
            StoreError::Unavailable(err.to_string())
        } else {
            StoreError::Protocol(err.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error Redis answers with `reply` (one RESP error line).
    fn reply(line: &str) -> redis::RedisError {
        match redis::parse_redis_value(format!("-{line}\r\n").as_bytes()) {
            Ok(value) => value.extract_error().unwrap_err(),
            Err(err) => err,
        }
    }

    /// A Redis loading its data, or a cluster failing over, is retryable
    /// (UNAVAILABLE to clients); a script error is not.
    #[test]
    fn transient_server_replies_are_unavailable() {
        for line in [
            "LOADING Redis is loading the dataset in memory",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "MASTERDOWN Link with MASTER is down",
            "READONLY You can't write against a read only replica.",
            "MOVED 3999 127.0.0.1:6381",
        ] {
            let err = reply(line);
            assert!(
                matches!(StoreError::from_redis(err), StoreError::Unavailable(_)),
                "{line}"
            );
        }
        let script =
            reply("ERR user_script:1: Script attempted to access nonexistent global variable");
        assert!(matches!(
            StoreError::from_redis(script),
            StoreError::Protocol(_)
        ));
    }
}
