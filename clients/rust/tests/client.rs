//! The client against a real `testbed all`: the README's steps (publish a
//! batch, read device stats, a partial rejection), bearer tokens,
//! backpressure with RetryInfo, and the publisher's exactly-once delivery
//! through an ingest restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Testbed, eventually};
use testbed_client::v1::{GpuSample, PauseRequest, ResumeRequest, TokenUsage};
use testbed_client::{
    Client, ErrorDetails, Options, PublishError, PublisherOptions, RetryPolicy, events,
};
use testbed_test_support::RedisServer;
use tonic::Code;

async fn client(tb: &Testbed) -> Client {
    Client::connect(&tb.url(), &Options::default())
        .await
        .unwrap()
}

/// Waits until `device` has `count` processed events and returns its stats.
async fn device_with(
    client: &Client,
    device: &str,
    count: u64,
) -> testbed_client::v1::GetDeviceStatsResponse {
    eventually(Duration::from_secs(15), "device stats", || async {
        client
            .device_stats(device, None)
            .await
            .ok()
            .filter(|s| s.totals.as_ref().is_some_and(|t| t.event_count == count))
    })
    .await
}

/// A batch of three kinds published with retries is read back as the
/// device's statistics (3 events, its labels, the GPU and token figures),
/// and the same batch re-sent counts as 3 duplicates.
#[tokio::test]
async fn publish_a_batch_and_read_device_stats() {
    let tb = Testbed::start(&[]).await;
    let client = client(&tb).await;
    let mut gpu = events::gpu(
        "rs-g-1",
        "rs-dev-1",
        GpuSample {
            utilization: 0.75,
            temperature_celsius: 61.0,
            ..GpuSample::default()
        },
    );
    gpu.labels.insert("arch".to_owned(), "arm64".to_owned());
    let batch = vec![
        gpu,
        events::tokens(
            "rs-t-1",
            "rs-dev-1",
            TokenUsage {
                model: "llama-3-8b".to_owned(),
                tenant: "team-a".to_owned(),
                prompt_tokens: 812,
                completion_tokens: 96,
                latency: None,
            },
        ),
        events::metric("rs-m-1", "rs-dev-1", "fan_speed", 3200.0, "1"),
    ];
    let policy = RetryPolicy::default();
    let reply = client.publish(batch.clone(), "", 0, &policy).await.unwrap();
    assert_eq!((reply.accepted_count, reply.duplicate_count), (3, 0));
    assert!(reply.rejections.is_empty());
    let again = client.publish(batch, "", 0, &policy).await.unwrap();
    assert_eq!((again.accepted_count, again.duplicate_count), (3, 3));

    let stats = device_with(&client, "rs-dev-1", 3).await;
    let device = stats.device.unwrap();
    assert_eq!(device.labels.get("arch").map(String::as_str), Some("arm64"));
    let totals = stats.totals.unwrap();
    let gpu = totals.gpu.unwrap();
    assert_eq!(gpu.count, 1);
    assert_eq!(gpu.utilization.unwrap().mean, 0.75);
    let tokens = totals.tokens.unwrap();
    assert_eq!(
        (tokens.count, tokens.prompt_tokens, tokens.completion_tokens),
        (1, 812, 96)
    );
    assert_eq!(totals.metrics.len(), 1);
    assert_eq!(totals.metrics[0].value.unwrap().sum, 3200.0);
}

/// An invalid event is rejected on its own (index, id, field) while the
/// rest is stored; an empty batch fails INVALID_ARGUMENT with a BadRequest
/// on `events`, decoded alike from Publish and from a PublishStream ack.
#[tokio::test]
async fn partial_rejection_and_bad_request_are_decoded() {
    let tb = Testbed::start(&[]).await;
    let client = client(&tb).await;
    let sample = |u| GpuSample {
        utilization: u,
        ..GpuSample::default()
    };
    let reply = client
        .publish(
            vec![
                events::gpu("rs-r-1", "rs-dev-r", sample(0.5)),
                events::gpu("rs-r-2", "rs-dev-r", sample(2.0)),
            ],
            "",
            0,
            &RetryPolicy::default(),
        )
        .await
        .unwrap();
    assert_eq!(reply.accepted_count, 1);
    assert_eq!(reply.rejections.len(), 1);
    let rejection = &reply.rejections[0];
    assert_eq!(
        (
            rejection.index,
            rejection.event_id.as_str(),
            rejection.field.as_str()
        ),
        (1, "rs-r-2", "events[1].gpu.utilization")
    );

    let status = client
        .publish(vec![], "", 0, &RetryPolicy::default())
        .await
        .unwrap_err();
    let details = ErrorDetails::from_status(&status);
    assert_eq!(details.code, Code::InvalidArgument);
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["events"]);

    let publisher = client.publisher(PublisherOptions::default()).unwrap();
    let refused = publisher
        .publish_batch(vec![])
        .await
        .unwrap()
        .await
        .unwrap_err();
    let PublishError::Refused {
        sequence,
        details: from_ack,
    } = refused
    else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert_eq!(sequence, 1);
    assert_eq!(from_ack.code, Code::InvalidArgument);
    assert_eq!(from_ack.field_violations, details.field_violations);
    let stats = publisher.close().await;
    assert_eq!(
        (stats.batches, stats.failed_batches, stats.acked_batches),
        (1, 1, 0)
    );
}

/// Without a token Publish is UNAUTHENTICATED (ErrorInfo TOKEN_MISSING,
/// domain testbed); with the write token it is accepted.
#[tokio::test]
async fn bearer_token_is_sent() {
    let secret = "rust-client-write-secret-01";
    let tb = Testbed::start(&["--auth-tokens", &format!("writer:write:{secret}")]).await;
    let anonymous = client(&tb).await;
    let event = || vec![events::metric("rs-auth-1", "rs-dev-auth", "x", 1.0, "")];
    let status = anonymous
        .publish(event(), "", 0, &RetryPolicy::default())
        .await
        .unwrap_err();
    let details = ErrorDetails::from_status(&status);
    assert_eq!(
        (
            details.code,
            details.reason.as_deref(),
            details.domain.as_deref()
        ),
        (
            Code::Unauthenticated,
            Some("TOKEN_MISSING"),
            Some("testbed")
        )
    );
    let options = Options {
        token: Some(secret.parse().unwrap()),
        ..Options::default()
    };
    let writer = Client::connect(&tb.url(), &options).await.unwrap();
    let reply = writer
        .publish(event(), "", 0, &RetryPolicy::default())
        .await
        .unwrap();
    assert_eq!(reply.accepted_count, 1);
}

/// Over the backlog limit Publish is RESOURCE_EXHAUSTED with the server's
/// 300 ms RetryInfo decoded; the publisher re-sends its refused batch
/// after that delay and it is acknowledged once the worker drains.
#[tokio::test]
async fn backpressure_retry_info_is_honoured() {
    let tb = Testbed::start(&[
        "--backlog-limit",
        "1",
        "--backlog-max-age",
        "0s",
        "--retry-after",
        "300ms",
    ])
    .await;
    let client = client(&tb).await;
    client
        .worker
        .clone()
        .pause(PauseRequest {
            reason: "rust client test".to_owned(),
        })
        .await
        .unwrap();
    let first: Vec<_> = (0..3)
        .map(|i| events::metric(&format!("rs-bp-{i}"), "rs-dev-bp", "x", 1.0, ""))
        .collect();
    assert_eq!(
        client
            .publish(first, "", 0, &RetryPolicy::default())
            .await
            .unwrap()
            .accepted_count,
        3
    );
    let once = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    let refused = vec![events::metric("rs-bp-refused", "rs-dev-bp", "x", 1.0, "")];
    let status = client.publish(refused, "", 0, &once).await.unwrap_err();
    let details = ErrorDetails::from_status(&status);
    assert_eq!(details.code, Code::ResourceExhausted);
    assert_eq!(details.retry_delay, Some(Duration::from_millis(300)));

    let publisher = client.publisher(PublisherOptions::default()).unwrap();
    let ack = publisher
        .publish_batch(vec![events::metric(
            "rs-bp-late",
            "rs-dev-bp",
            "x",
            1.0,
            "",
        )])
        .await
        .unwrap();
    // Refused at least once while paused, then re-sent after RetryInfo.
    eventually(Duration::from_secs(5), "a re-sent batch", || async {
        (publisher.stats().resent_batches >= 1).then_some(())
    })
    .await;
    // Counted under its reason: refused, not a broken stream or a
    // contract breach.
    let stats = publisher.stats();
    assert!(stats.resent_refused >= 1, "{stats:?}");
    assert_eq!(stats.resent_protocol_error, 0, "{stats:?}");
    client
        .worker
        .clone()
        .resume(ResumeRequest::default())
        .await
        .unwrap();
    let ack = ack.await.unwrap();
    assert_eq!(
        (ack.events, ack.accepted_count, ack.duplicate_count),
        (1, 1, 0)
    );
    assert!(ack.attempts >= 2, "{ack:?}");
    let stats = publisher.close().await;
    assert_eq!(
        (stats.acked_batches, stats.accepted, stats.failed_batches),
        (1, 1, 0)
    );
}

/// The publisher delivers every event exactly once through an ingest
/// SIGKILL and restart mid-stream: 20 000 events acknowledged, the run's
/// ledger counts 20 000 processed, and a second stream was opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_survives_a_restart_exactly_once() {
    const EVENTS: u64 = 20_000;
    let redis = RedisServer::start();
    let url = redis.url();
    let mut tb = Testbed::start(&["--redis-url", &url, "--claim-idle", "1s"]).await;
    let client = client(&tb).await;
    let run_id = format!("rs-restart-{}", std::process::id());
    let publisher = std::sync::Arc::new(
        client
            .publisher(PublisherOptions {
                max_batch: 100,
                max_unacked: 16,
                // Room for a slow restart on a busy CI machine (2 s waits).
                retry: RetryPolicy {
                    max_attempts: 30,
                    ..PublisherOptions::default().retry
                },
                ..PublisherOptions::default()
            })
            .unwrap(),
    );
    let producer = {
        let (publisher, run_id) = (publisher.clone(), run_id.clone());
        tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..EVENTS {
                let mut event = events::metric(
                    &format!("rs-x-{i}"),
                    &format!("rs-dev-x-{}", i % 50),
                    "x",
                    1.0,
                    "",
                );
                event.run_id = run_id.clone();
                let ack = publisher.publish(event).await.unwrap();
                if i % 100 == 99 {
                    acks.push(ack);
                    // About 2 s in all, so the restart lands mid-stream.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            publisher.flush().await.unwrap();
            acks
        })
    };
    eventually(
        Duration::from_secs(20),
        "some batches acknowledged",
        || async { (publisher.stats().acked_batches >= 20).then_some(()) },
    )
    .await;
    tb.restart().await;
    let acks = producer.await.unwrap();
    for ack in acks {
        ack.await.unwrap();
    }
    let publisher = std::sync::Arc::into_inner(publisher).unwrap();
    let stats = publisher.close().await;
    assert_eq!(
        (
            stats.events,
            stats.accepted,
            stats.rejected,
            stats.failed_batches
        ),
        (EVENTS, EVENTS, 0, 0)
    );
    assert!(stats.streams_opened >= 2, "{stats:?}");
    let ledger = eventually(Duration::from_secs(30), "the run's ledger", || async {
        client
            .run_stats(&run_id)
            .await
            .ok()
            .filter(|l| l.processed >= EVENTS)
    })
    .await;
    assert_eq!(ledger.processed, EVENTS, "{ledger:?}");
    drop(redis);
}

/// Batches re-sent under their producer id and sequences by a second
/// publisher are acknowledged as all duplicates: 3 batches of 10 events
/// sent twice count 30 processed in the run's ledger, not 60.
#[tokio::test]
async fn resent_sequences_count_once() {
    let tb = Testbed::start(&[]).await;
    let client = client(&tb).await;
    let run_id = format!("rs-dup-{}", std::process::id());
    let options = PublisherOptions::default();
    let batches: Vec<Vec<_>> = (0..3)
        .map(|b| {
            (0..10)
                .map(|i| {
                    let mut e =
                        events::metric(&format!("rs-dup-{b}-{i}"), "rs-dev-dup", "x", 1.0, "");
                    e.run_id = run_id.clone();
                    e
                })
                .collect()
        })
        .collect();
    for round in 0..2 {
        let publisher = client.publisher(options.clone()).unwrap();
        let mut acks = Vec::new();
        for batch in &batches {
            acks.push(publisher.publish_batch(batch.clone()).await.unwrap());
        }
        for (i, ack) in acks.into_iter().enumerate() {
            let ack = ack.await.unwrap();
            let duplicates = if round == 0 { 0 } else { 10 };
            assert_eq!(
                (ack.sequence, ack.accepted_count, ack.duplicate_count),
                (i as u64 + 1, 10, duplicates)
            );
        }
        publisher.close().await;
    }
    let ledger = eventually(Duration::from_secs(15), "the run's ledger", || async {
        client
            .run_stats(&run_id)
            .await
            .ok()
            .filter(|l| l.processed >= 30)
    })
    .await;
    assert_eq!(ledger.processed, 30, "{ledger:?}");
}

/// A `dns:///` target (resolved, balanced) publishes and reads like a
/// plain one.
#[tokio::test]
async fn dns_target_publishes_and_reads() {
    let tb = Testbed::start(&[]).await;
    let url = format!("dns:///127.0.0.1:{}", tb.addr.port());
    let client = Client::connect(&url, &Options::default()).await.unwrap();
    let batch = vec![events::metric("rs-dns-1", "rs-dev-dns", "x", 2.5, "")];
    let reply = client
        .publish(batch, "", 0, &RetryPolicy::default())
        .await
        .unwrap();
    assert_eq!(reply.accepted_count, 1);
    let stats = device_with(&client, "rs-dev-dns", 1).await;
    assert_eq!(stats.totals.unwrap().metrics[0].value.unwrap().sum, 2.5);
}

/// Over TLS: with the CA (and, for a server requiring one, a client
/// certificate) a publish is accepted; without the client certificate the
/// call fails; without a CA, `https://` is refused before any connection.
#[tokio::test]
async fn publishes_over_mutual_tls() {
    use testbed_client::ClientTls;
    use testbed_test_support::tls::{Ca, Files};

    let files = Files::new("rust-client-mtls");
    let ca = Ca::new("testbed-ca");
    let server = ca.leaf("testbed");
    let client_leaf = ca.leaf("client");
    let ca_file = files.write("ca.crt", &ca.pem());
    let cert = files.write("server.crt", &server.cert);
    let key = files.write("server.key", &server.key);
    let tb = Testbed::start(&[
        "--tls-cert",
        &cert.display().to_string(),
        "--tls-key",
        &key.display().to_string(),
        "--tls-client-ca",
        &ca_file.display().to_string(),
        "--probe-addr",
        "127.0.0.1:0",
    ])
    .await;
    let url = format!("https://localhost:{}", tb.addr.port());
    let event = |id: &str| vec![events::metric(id, "rs-dev-tls", "x", 1.0, "")];
    let trusted = ClientTls::default().with_ca(ca.pem());
    let mutual = Options {
        tls: Some(
            trusted
                .clone()
                .with_identity(&client_leaf.cert, &client_leaf.key),
        ),
        ..Options::default()
    };
    let client = Client::connect(&url, &mutual).await.unwrap();
    let reply = client
        .publish(event("rs-tls-1"), "", 0, &RetryPolicy::default())
        .await
        .unwrap();
    assert_eq!(reply.accepted_count, 1);
    let no_identity = Options {
        tls: Some(trusted),
        ..Options::default()
    };
    let anonymous = Client::connect(&url, &no_identity).await.unwrap();
    let policy = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    assert!(
        anonymous
            .publish(event("rs-tls-2"), "", 0, &policy)
            .await
            .is_err(),
        "a client without a certificate was served"
    );
    assert!(matches!(
        Client::connect(&url, &Options::default()).await,
        Err(testbed_client::ConnectError::TlsNeedsCa { .. })
    ));
}
