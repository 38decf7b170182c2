//! Reads a device's statistics (waiting until the worker has processed
//! something of it) and the pipeline's figures.
//!
//! `cargo run -p testbed-client --example query -- [URL] [DEVICE]`
//! (defaults: `$TESTBED_URL` or `http://127.0.0.1:50051`, and
//! `example-device`, which the publish example writes).
// An example's output is its point: it prints.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use testbed_client::tonic::Code;
use testbed_client::v1::GetPipelineStatsRequest;
use testbed_client::{Client, Options};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("TESTBED_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let device = args.next().unwrap_or_else(|| "example-device".to_owned());
    let options = Options {
        token: std::env::var("TESTBED_TOKEN")
            .ok()
            .map(|t| t.parse())
            .transpose()?,
        ..Options::default()
    };
    let client = Client::connect(&url, &options).await?;

    // Events are processed asynchronously: NOT_FOUND until a worker applied them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        match client
            .device_stats(&device, Some(Duration::from_secs(15 * 60)))
            .await
        {
            Ok(stats) => break stats,
            Err(status) if status.code() == Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => return Err(status.into()),
        }
    };
    let totals = stats.totals.unwrap_or_default();
    let labels = stats.device.map(|d| d.labels).unwrap_or_default();
    println!("{device}: {} events, labels {labels:?}", totals.event_count);
    if let Some(gpu) = totals.gpu.filter(|g| g.count > 0) {
        let mean = gpu.utilization.map(|u| u.mean).unwrap_or_default();
        println!("  gpu: {} samples, mean utilisation {mean:.2}", gpu.count);
    }
    for metric in &totals.metrics {
        let value = metric.value.unwrap_or_default();
        println!(
            "  {}: count {} sum {} max {}",
            metric.name, value.count, value.sum, value.max
        );
    }
    let pipeline = client
        .query
        .clone()
        .get_pipeline_stats(GetPipelineStatsRequest { window: None })
        .await?
        .into_inner()
        .stats
        .unwrap_or_default();
    println!(
        "pipeline: ingested {}, processed {}, backlog {}",
        pipeline.ingested, pipeline.processed, pipeline.backlog
    );
    if totals.event_count == 0 {
        return Err("the device has no events".into());
    }
    Ok(())
}
