//! Publishes a batch with `Publish` (one event of it invalid, to show a
//! partial rejection), then 1 000 events through the batching `Publisher`.
//!
//! `cargo run -p testbed-client --example publish -- [URL]` (default
//! `$TESTBED_URL`, else `http://127.0.0.1:50051`; `$TESTBED_TOKEN` is sent
//! as a bearer token when set). Exits non-zero if anything was not
//! acknowledged as expected.
// An example's output is its point: it prints.
#![allow(clippy::print_stdout)]

use testbed_client::v1::GpuSample;
use testbed_client::{Client, Options, PublisherOptions, RetryPolicy, events};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("TESTBED_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let options = Options {
        token: std::env::var("TESTBED_TOKEN")
            .ok()
            .map(|t| t.parse())
            .transpose()?,
        ..Options::default()
    };
    let client = Client::connect(&url, &options).await?;
    let run = std::process::id();

    let mut gpu = events::gpu(
        &format!("ex-{run}-gpu"),
        "example-device",
        GpuSample {
            utilization: 0.73,
            temperature_celsius: 61.0,
            ..GpuSample::default()
        },
    );
    gpu.labels.insert("arch".to_owned(), "arm64".to_owned());
    let invalid = events::gpu(
        &format!("ex-{run}-bad"),
        "example-device",
        GpuSample {
            utilization: 2.0,
            ..GpuSample::default()
        },
    );
    let fan = events::metric(
        &format!("ex-{run}-fan"),
        "example-device",
        "fan_speed",
        3200.0,
        "1",
    );
    let reply = client
        .publish(vec![gpu, invalid, fan], "", 0, &RetryPolicy::default())
        .await?;
    println!(
        "Publish: accepted {} (duplicates {}), rejected {}",
        reply.accepted_count,
        reply.duplicate_count,
        reply.rejections.len()
    );
    for r in &reply.rejections {
        println!(
            "  rejected #{} {}: {} {}",
            r.index, r.event_id, r.field, r.reason
        );
    }
    if reply.accepted_count != 2 || reply.rejections.len() != 1 {
        return Err("expected 2 accepted and 1 rejected".into());
    }

    let publisher = client.publisher(PublisherOptions::default())?;
    let mut acks = Vec::new();
    for i in 0..1000 {
        let event = events::metric(
            &format!("ex-{run}-m-{i}"),
            "example-device",
            "requests",
            f64::from(i),
            "1",
        );
        acks.push(publisher.publish(event).await?);
    }
    for ack in acks {
        ack.await?;
    }
    let producer = publisher.producer_id().to_owned();
    let stats = publisher.close().await;
    println!(
        "Publisher {producer}: {} events in {} batches, {} accepted, {} failed batches",
        stats.events, stats.batches, stats.accepted, stats.failed_batches
    );
    if stats.accepted != 1000 || stats.failed_batches != 0 {
        return Err("the publisher did not deliver every event".into());
    }
    Ok(())
}
