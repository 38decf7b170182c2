//! Redis over TLS: `rediss://` with the certificates of `--redis-tls-ca`,
//! `--redis-tls-cert` and `--redis-tls-key`, against a real `redis-server`
//! listening on a TLS port with a CA made in the test (and requiring client
//! certificates, Redis' default).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use testbed_stream::{AnyLog, AppendEvent, EntryMeta, EventLog as _, RedisLog, StoreArgs};
use testbed_test_support::tls::{Ca, Files};
use testbed_test_support::{RedisServer, free_port};

/// A Redis with a TLS port (returned) whose certificate `ca` signed and
/// which asks clients for a certificate of `ca`.
fn tls_redis(ca: &Ca, files: &Files) -> (RedisServer, u16) {
    let leaf = ca.leaf("redis");
    let cert = files.write("redis.crt", &leaf.cert);
    let key = files.write("redis.key", &leaf.key);
    let ca_file = files.write("redis-ca.crt", &ca.pem());
    let port = free_port();
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &cert.display().to_string(),
        "--tls-key-file",
        &key.display().to_string(),
        "--tls-ca-cert-file",
        &ca_file.display().to_string(),
        "--tls-auth-clients",
        "yes",
    ]);
    (redis, port)
}

/// The log's flags for the TLS port `port`, trusting `ca_file`, with the
/// client certificate `client` (certificate and key files) if given.
fn args(port: u16, ca_file: PathBuf, client: Option<(PathBuf, PathBuf)>) -> StoreArgs {
    let (cert, key) = client.unzip();
    StoreArgs {
        redis_url: Some(format!("rediss://127.0.0.1:{port}")),
        redis_tls_ca: Some(ca_file),
        redis_tls_cert: cert,
        redis_tls_key: key,
        partitions: 1,
        redis_timeout: Duration::from_secs(2),
        ..StoreArgs::default()
    }
}

/// With the CA and a client certificate, appends and reads go over TLS,
/// to that Redis (its plaintext port sees the entry).
#[tokio::test]
async fn appends_and_reads_over_tls_with_a_client_certificate() {
    let files = Files::new("redis-tls-ok");
    let ca = Ca::new("redis-ca");
    let (redis, port) = tls_redis(&ca, &files);
    let client = ca.leaf("testbed");
    let args = args(
        port,
        files.write("ca.crt", &ca.pem()),
        Some((
            files.write("client.crt", &client.cert),
            files.write("client.key", &client.key),
        )),
    );
    assert_eq!(args.check(), Ok(()));
    let log = AnyLog::Redis(RedisLog::connect(&args).await.unwrap());
    log.ensure_group().await.unwrap();
    let event = AppendEvent {
        event_id: "tls-1",
        run_id: "",
        bytes: b"event".to_vec().into(),
    };
    let outcome = log
        .append(0, &EntryMeta::default(), &[event])
        .await
        .unwrap();
    assert!(outcome.duplicates.is_empty());
    let read = log.read(0, "c", 10, Duration::ZERO).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].events[0].as_ref(), b"event");
    assert_eq!(redis.command(&["XLEN", &log.keys().stream(0)]), ":1");
}

/// A Redis whose certificate another CA signed is refused, and so is a
/// connection without the client certificate Redis asks for; either
/// error names the certificate.
#[tokio::test]
async fn another_ca_or_no_client_certificate_is_refused() {
    let files = Files::new("redis-tls-refused");
    let ca = Ca::new("redis-ca");
    let (_redis, port) = tls_redis(&ca, &files);
    let client = ca.leaf("testbed");
    let client_files = (
        files.write("client.crt", &client.cert),
        files.write("client.key", &client.key),
    );
    let other = files.write("other-ca.crt", &Ca::new("other").pem());
    // With the default --redis-timeout (500 ms), shorter than the
    // reconnecting connection's own retries: the error must still name
    // the cause, not only the timeout.
    let with_default_timeout = |args: StoreArgs| StoreArgs {
        redis_timeout: StoreArgs::default().redis_timeout,
        ..args
    };
    let untrusting =
        RedisLog::connect(&with_default_timeout(args(port, other, Some(client_files))))
            .await
            .unwrap();
    let err = untrusting
        .ping()
        .await
        .expect_err("a Redis of another CA was trusted")
        .to_string();
    // The error names the cause, not only a timeout (#21).
    eprintln!("refused as expected: {err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let anonymous = RedisLog::connect(&with_default_timeout(args(
        port,
        files.write("ca.crt", &ca.pem()),
        None,
    )))
    .await
    .unwrap();
    let err = anonymous
        .ping()
        .await
        .expect_err("Redis accepted a client without a certificate")
        .to_string();
    eprintln!("refused as expected: {err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

/// The TLS flags need `rediss://` URLs, and readable files.
#[test]
fn tls_flags_need_rediss_urls_and_readable_files() {
    let files = Files::new("redis-tls-flags");
    let ca = files.write("ca.crt", &Ca::new("redis-ca").pem());
    let mut plain = args(6379, ca.clone(), None);
    plain.redis_url = Some("redis://127.0.0.1:6379".to_owned());
    let err = plain.check().unwrap_err();
    assert!(err.contains("rediss://"), "{err}");
    let missing = args(6379, files.dir.join("missing.crt"), None);
    let err = missing.check().unwrap_err();
    assert!(
        err.contains("--redis-tls-ca") && err.contains("missing.crt"),
        "{err}"
    );
    assert_eq!(args(6379, ca, None).check(), Ok(()));
}
