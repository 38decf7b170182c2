//! Request and per-connection limits (#23, #31 item 4) on real `testbed`
//! processes: each is set by its flag and bites, and the server stays
//! SERVING.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Testbed;
use common::h2::{frame, handshake, health_check_headers, resets_in, settings_in};
use testbed_proto::v1::GetDeviceStatsRequest;
use testbed_proto::v1::GetPipelineStatsRequest;
use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_server::frames::kind;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;

async fn assert_serving(tb: &Testbed) {
    let status = HealthClient::new(tb.channel().await)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
}

/// --max-decoding-message-size 1024: a 2 KB request is refused (tonic's
/// decoder answers OUT_OF_RANGE) where a 500-byte one is served;
/// --max-encoding-message-size 16: a reply larger than that fails its
/// call instead of being sent. The server stays SERVING.
#[tokio::test]
async fn message_size_limits_bite() {
    let tb = Testbed::start(&[
        "all",
        "--max-decoding-message-size",
        "1024",
        "--max-encoding-message-size",
        "16",
    ]);
    tb.wait_serving("testbed.v1.QueryService").await;
    let mut query = QueryServiceClient::new(tb.channel().await);
    let ask = |len: usize| GetDeviceStatsRequest {
        device_id: "d".repeat(len),
        window: None,
    };
    let big = query.get_device_stats(ask(2000)).await.unwrap_err();
    assert_eq!(big.code(), Code::OutOfRange, "{big:?}");
    assert!(big.message().contains("too large"), "{big:?}");
    let small = query.get_device_stats(ask(500)).await;
    assert!(
        !matches!(&small, Err(s) if s.code() == Code::OutOfRange),
        "{small:?}"
    );
    let reply = query
        .get_pipeline_stats(GetPipelineStatsRequest::default())
        .await
        .unwrap_err();
    eprintln!("oversized reply: {:?} {}", reply.code(), reply.message());
    assert!(reply.message().contains("too large"), "{reply:?}");
    assert_serving(&tb).await;
}

/// --max-concurrent-requests 0: every call but health is shed at once with
/// RESOURCE_EXHAUSTED and a RetryInfo; health still answers SERVING.
#[tokio::test]
async fn calls_past_the_concurrency_limit_are_shed() {
    let tb = Testbed::start(&["all", "--max-concurrent-requests", "0"]);
    tb.wait_serving("testbed.v1.QueryService").await;
    let started = Instant::now();
    let shed = QueryServiceClient::new(tb.channel().await)
        .get_pipeline_stats(GetPipelineStatsRequest::default())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not shed at once"
    );
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    assert_eq!(
        shed.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_millis(100))
    );
    assert_serving(&tb).await;
}

/// The server announces its per-connection limits in SETTINGS, as the
/// flags set them, and refuses a stream past --max-concurrent-streams
/// (RST_STREAM REFUSED_STREAM) while the first stays open.
#[tokio::test]
async fn per_connection_limits_are_announced_and_bite() {
    let tb = Testbed::start(&[
        "all",
        "--max-concurrent-streams",
        "1",
        "--max-header-list-size",
        "8192",
        "--initial-stream-window",
        "100000",
    ]);
    tb.wait_serving("").await;
    let mut stream = TcpStream::connect(tb.addr).await.unwrap();
    stream.write_all(&handshake()).await.unwrap();
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let settings = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before SETTINGS");
        bytes.extend_from_slice(&buf[..n]);
        if let Some(settings) = settings_in(&bytes) {
            break settings;
        }
    };
    // SETTINGS_MAX_CONCURRENT_STREAMS, _INITIAL_WINDOW_SIZE, _MAX_HEADER_LIST_SIZE.
    assert!(settings.contains(&(0x3, 1)), "{settings:?}");
    assert!(settings.contains(&(0x4, 100_000)), "{settings:?}");
    assert!(settings.contains(&(0x6, 8192)), "{settings:?}");

    // Acknowledge, then open two streams that stay open (no END_STREAM).
    stream
        .write_all(&frame(kind::SETTINGS, 1, 0, &[]))
        .await
        .unwrap();
    stream.write_all(&health_check_headers(1)).await.unwrap();
    stream.write_all(&health_check_headers(3)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut resets = Vec::new();
    while resets.is_empty() && Instant::now() < deadline {
        let Ok(read) =
            tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await
        else {
            continue;
        };
        let n = read.unwrap();
        assert!(n > 0, "connection closed");
        bytes.extend_from_slice(&buf[..n]);
        resets = resets_in(&bytes);
    }
    // REFUSED_STREAM (0x7) on the second stream only.
    assert_eq!(resets, [(3, 0x7)]);
    assert_serving(&tb).await;
}
