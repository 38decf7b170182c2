//! The log's flags, shared by every service that touches it.

use std::time::Duration;

/// Where the log lives and how it is laid out. Ingest, workers and query
/// must agree on `--partitions` and `--key-prefix`.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Redis URL (`redis://[user:pass@]host:port[/db]`, `rediss://` for TLS).
    /// With --redis-cluster, a comma-separated list of seed nodes. Without
    /// it, `testbed all` uses the embedded in-memory log (not durable).
    #[arg(long, env = "REDIS_URL", value_parser = parse_redis_url)]
    pub redis_url: Option<String>,

    /// Treat --redis-url as the seed nodes of a Redis Cluster.
    #[arg(long, env = "REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// Redis ACL user to authenticate as (instead of one in --redis-url).
    #[arg(long, env = "TESTBED_REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// File holding the Redis password (its first line), e.g. a mounted
    /// Kubernetes Secret: kept out of the command line, the environment
    /// and the process list. Read at every (re)connect, so a rotated
    /// Secret is used from the next connection on.
    #[arg(long, env = "TESTBED_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<std::path::PathBuf>,

    /// PEM file of the CA certificate(s) a `rediss://` Redis's certificate
    /// must chain to, instead of the system's roots (a Redis whose
    /// certificate a private CA signed, e.g. cert-manager's). Read at every
    /// (re)connect, so a rotated Secret is used from the next connection.
    #[arg(long, env = "TESTBED_REDIS_TLS_CA")]
    pub redis_tls_ca: Option<std::path::PathBuf>,

    /// PEM client certificate to present to a `rediss://` Redis that asks
    /// for one (`tls-auth-clients yes`, Redis' default), with
    /// --redis-tls-key. Read at every (re)connect.
    #[arg(long, env = "TESTBED_REDIS_TLS_CERT", requires = "redis_tls_key")]
    pub redis_tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --redis-tls-cert.
    #[arg(long, env = "TESTBED_REDIS_TLS_KEY", requires = "redis_tls_cert")]
    pub redis_tls_key: Option<std::path::PathBuf>,

    /// Number of partitions (streams). An event's partition is a stable hash
    /// of its device_id. Changing it re-routes devices: drain first.
    #[arg(long, env = "TESTBED_PARTITIONS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,

    /// Prefix of every key, so several testbeds can share one Redis.
    #[arg(long, env = "TESTBED_KEY_PREFIX", default_value = "testbed", value_parser = parse_prefix)]
    pub key_prefix: String,

    /// Bound on every Redis call: past it the call fails as UNAVAILABLE
    /// rather than hanging.
    #[arg(long, env = "TESTBED_REDIS_TIMEOUT", default_value = "500ms",
          value_parser = humantime::parse_duration)]
    pub redis_timeout: Duration,

    /// Replicas every append must reach before it is acknowledged: after
    /// each append, Redis `WAIT`s for this many replicas (of the
    /// partition's master, on Redis Cluster) for up to
    /// `--redis-wait-timeout`; fewer answer the batch UNAVAILABLE with
    /// RetryInfo, and its retry is deduplicated. 0 acknowledges what the
    /// master has (a failover can lose the last writes replication had not
    /// carried; README, "Guarantees").
    #[arg(long, env = "TESTBED_REDIS_WAIT_REPLICAS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=16))]
    pub redis_wait_replicas: u32,

    /// How long an append waits for `--redis-wait-replicas` replicas.
    /// Must be shorter than `--redis-timeout`, which bounds the whole call.
    #[arg(long, env = "TESTBED_REDIS_WAIT_TIMEOUT", default_value = "100ms",
          value_parser = humantime::parse_duration)]
    pub redis_wait_timeout: Duration,

    /// With --redis-cluster, how often the shared connection is replaced
    /// by a new one that reads the slot map afresh from the seeds, in the
    /// background (no call waits for it; calls in flight finish on the old
    /// one). A safety net: a call failing as unavailable already does this
    /// at once; the period catches topology changes no call tripped over
    /// (slots moved to a new node, a node added). `0s` turns it off.
    #[arg(long, env = "TESTBED_REDIS_TOPOLOGY_REFRESH", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub redis_topology_refresh: Duration,

    /// Event-id dedupe window: how many recent event ids each partition
    /// remembers. A retry re-sending an event id still in the window is
    /// counted once. Memory is bounded by it (about 100 bytes per id in
    /// Redis): 100000 ids x 4 partitions is roughly 40 MB.
    #[arg(long, env = "TESTBED_DEDUPE_WINDOW", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub dedupe_window: u64,

    /// Idempotent-producer window: how many recent batch sequences each
    /// partition remembers per producer_id (a bitmap, one bit per
    /// sequence: 65536 is 8 KiB per producer and partition). Batches that
    /// carry a producer_id and a sequence are deduplicated by it instead of
    /// by event id; a sequence older than the window is refused
    /// (FAILED_PRECONDITION), since whether it was appended cannot be told.
    /// Rounded up to a multiple of 8.
    #[arg(long, env = "TESTBED_PRODUCER_WINDOW", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(8..=1 << 30))]
    pub producer_window: u64,

    /// How long aggregates (per-minute buckets, device state, run ledgers)
    /// are kept; query windows may not exceed it.
    #[arg(long, env = "TESTBED_RETENTION", default_value = "1h",
          value_parser = humantime::parse_duration)]
    pub retention: Duration,
}

testbed_flags::default_from_flags!(StoreArgs);

impl StoreArgs {
    /// The certificates of `--redis-tls-ca`, `--redis-tls-cert` and
    /// `--redis-tls-key` (read now), if any is given: `None` leaves
    /// `rediss://` to the system's roots and no client certificate.
    pub(crate) fn redis_tls(&self) -> Result<Option<redis::TlsCertificates>, crate::StoreError> {
        if self.redis_tls_ca.is_none() && self.redis_tls_cert.is_none() {
            return Ok(None);
        }
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| crate::StoreError::Config(format!("{flag} {}: {e}", path.display())))
        };
        let root_cert = match &self.redis_tls_ca {
            Some(path) => Some(read("--redis-tls-ca", path)?),
            None => None,
        };
        let client_tls = match (&self.redis_tls_cert, &self.redis_tls_key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read("--redis-tls-cert", cert)?,
                client_key: read("--redis-tls-key", key)?,
            }),
            _ => None,
        };
        Ok(Some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }))
    }

    /// Flags that contradict one another: replicas awaited without a
    /// Redis (the embedded log has none), or for longer than every call
    /// may take.
    pub fn check(&self) -> Result<(), String> {
        if self.redis_password_file.is_some() {
            if self.redis_url.is_none() {
                return Err("--redis-password-file needs --redis-url".to_owned());
            }
            self.redis_password().map_err(|e| e.to_string())?;
        }
        if self.redis_tls_ca.is_some() || self.redis_tls_cert.is_some() {
            let Some(url) = &self.redis_url else {
                return Err("--redis-tls-ca and --redis-tls-cert need --redis-url".to_owned());
            };
            if let Some(plain) = url.split(',').find(|u| !u.starts_with("rediss://")) {
                return Err(format!(
                    "--redis-tls-ca and --redis-tls-cert are for TLS: {plain} must be a rediss:// URL"
                ));
            }
            self.redis_tls().map_err(|e| e.to_string())?;
        }
        if self.redis_wait_replicas > 0 && self.redis_url.is_none() {
            return Err(format!(
                "--redis-wait-replicas {} needs --redis-url: the embedded log has no replicas",
                self.redis_wait_replicas
            ));
        }
        if self.redis_wait_replicas > 0 && self.redis_wait_timeout >= self.redis_timeout {
            return Err(format!(
                "--redis-wait-timeout {:?} must be shorter than --redis-timeout {:?}, which bounds the whole append",
                self.redis_wait_timeout, self.redis_timeout
            ));
        }
        Ok(())
    }
}

impl StoreArgs {
    /// The password of `--redis-password-file` (its first line, without
    /// the line ending), if one is given.
    pub(crate) fn redis_password(&self) -> Result<Option<String>, crate::StoreError> {
        let Some(path) = &self.redis_password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            crate::StoreError::Config(format!("--redis-password-file {}: {e}", path.display()))
        })?;
        let password = text.lines().next().unwrap_or_default();
        if password.is_empty() {
            return Err(crate::StoreError::Config(format!(
                "--redis-password-file {}: the first line is empty",
                path.display()
            )));
        }
        Ok(Some(password.to_owned()))
    }
}

fn parse_redis_url(value: &str) -> Result<String, String> {
    for url in value.split(',') {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "expected redis://HOST:PORT or rediss://HOST:PORT".to_owned())?;
        if !matches!(scheme, "redis" | "rediss" | "redis+unix" | "unix") {
            return Err(format!(
                "unsupported scheme {scheme:?}: use redis:// or rediss://"
            ));
        }
        if rest.is_empty() {
            return Err("missing host".to_owned());
        }
    }
    Ok(value.to_owned())
}

fn parse_prefix(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err("1..64 characters of [A-Za-z0-9._-]".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `StoreArgs::default()` is the flags' defaults, every field of it
    /// (compared whole, so a hand-written default cannot drift again).
    #[test]
    fn default_is_every_flags_default() {
        let parsed = testbed_flags::parse_from::<StoreArgs, _, _>(["x"]).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", StoreArgs::default()));
    }

    /// Bad values name their flag.
    #[test]
    fn rejects_bad_values() {
        for (flag, value) in [
            ("--redis-url", "127.0.0.1:6379"),
            ("--redis-url", "http://x:1"),
            ("--redis-url", "redis://a:1,nope"),
            ("--partitions", "0"),
            ("--key-prefix", "a b"),
            ("--key-prefix", "{x}"),
            ("--redis-timeout", "fast"),
            ("--producer-window", "4"),
        ] {
            let err = testbed_flags::parse_from::<StoreArgs, _, _>(["x", flag, value]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
        }
    }

    /// Cluster seeds are a comma-separated list.
    #[test]
    fn cluster_seeds() {
        let cli = testbed_flags::parse_from::<StoreArgs, _, _>([
            "x",
            "--redis-cluster",
            "--redis-url",
            "redis://a:1,redis://b:2",
        ])
        .unwrap();
        assert!(cli.redis_cluster);
        assert_eq!(cli.redis_url.as_deref(), Some("redis://a:1,redis://b:2"));
    }

    /// Awaiting replicas needs a Redis, and a wait shorter than the call.
    #[test]
    fn replica_waits_are_checked() {
        let parse = |args: &[&str]| {
            testbed_flags::parse_from::<StoreArgs, _, _>([&["x"][..], args].concat()).unwrap()
        };
        assert!(parse(&[]).check().is_ok());
        let err = parse(&["--redis-wait-replicas", "1"]).check().unwrap_err();
        assert!(
            err.contains("--redis-wait-replicas 1 needs --redis-url"),
            "{err}"
        );
        let url = ["--redis-url", "redis://a:1", "--redis-wait-replicas", "1"];
        assert!(parse(&url).check().is_ok());
        let slow = [&url[..], &["--redis-wait-timeout", "1s"]].concat();
        let err = parse(&slow).check().unwrap_err();
        assert!(err.contains("--redis-wait-timeout"), "{err}");
        let err =
            testbed_flags::parse_from::<StoreArgs, _, _>(["x", "--redis-wait-replicas", "17"])
                .unwrap_err();
        assert!(err.to_string().contains("--redis-wait-replicas"), "{err}");
    }
}
