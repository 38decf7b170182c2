//! Watches the pipeline's figures (`WatchPipelineStats`): prints COUNT
//! messages, one a second, then cancels the stream by dropping it.
//!
//! `cargo run -p testbed-client --example watch -- [URL] [COUNT]`
//! (defaults: `$TESTBED_URL` or `http://127.0.0.1:50051`, and 3).
// An example's output is its point: it prints.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use futures::StreamExt as _;
use testbed_client::{Client, Options};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("TESTBED_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let count: usize = args.next().map(|c| c.parse()).transpose()?.unwrap_or(3);
    let options = Options {
        token: std::env::var("TESTBED_TOKEN")
            .ok()
            .map(|t| t.parse())
            .transpose()?,
        ..Options::default()
    };
    let client = Client::connect(&url, &options).await?;
    let stream = client
        .watch_pipeline_stats(Some(Duration::from_secs(1)), None)
        .await?;
    let mut stream = std::pin::pin!(stream.take(count));
    let mut seen = 0;
    while let Some(stats) = stream.next().await {
        let stats = stats?;
        seen += 1;
        println!(
            "ingested {} processed {} backlog {} rate {:.1}/s",
            stats.ingested, stats.processed, stats.backlog, stats.processing_rate
        );
    }
    if seen != count {
        return Err(format!("the watch ended after {seen} of {count} messages").into());
    }
    Ok(())
}
