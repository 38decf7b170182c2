//! Transport defences on real `testbed` processes (#31): descriptor
//! exhaustion neither spins nor outlasts the flood, silent connections are
//! closed by the handshake and idle timeouts, a client pinging too often
//! gets GOAWAY `too_many_pings`, rapid reset still closes the connection,
//! and the request limits (#23) bite. Loopback only, bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::h2::{frame, goaway_in, handshake, health_check_headers};
use common::{Testbed, scrape};
use testbed_server::frames::{self, FrameHeader, FrameTracker, PREFACE, kind};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// What a raw connection read until the server closed it.
#[derive(Debug, Default)]
struct Heard {
    headers: Vec<FrameHeader>,
    /// Error code and debug data of the first GOAWAY.
    goaway: Option<(u32, String)>,
    /// When the GOAWAY and the close came, from the start of reading.
    goaway_at: Option<Duration>,
    closed_at: Option<Duration>,
}

/// Reads frames from `stream` for at most `limit`, until the server
/// closes; answers nothing. Collects GOAWAY's code and debug data.
async fn listen(stream: &mut TcpStream, limit: Duration) -> Heard {
    let start = Instant::now();
    let mut heard = Heard::default();
    let mut tracker = FrameTracker::server();
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return heard,
            Ok(Ok(0)) | Ok(Err(_)) => {
                heard.closed_at = Some(start.elapsed());
                return heard;
            }
            Ok(Ok(n)) => {
                let mut found = Vec::new();
                tracker.feed(&buf[..n], |h| found.push(h));
                all.extend_from_slice(&buf[..n]);
                heard.headers.extend(found);
                if heard.goaway.is_none() {
                    heard.goaway = goaway_in(&all);
                    if heard.goaway.is_some() {
                        heard.goaway_at = Some(start.elapsed());
                    }
                }
            }
        }
    }
}

/// `heard` got a GOAWAY NO_ERROR with `debug` at a time within `at`, then
/// the close at least `grace` later.
fn assert_goaway_then_close(
    heard: &Heard,
    debug: &str,
    at: std::ops::Range<Duration>,
    grace: Duration,
) {
    assert_eq!(heard.goaway, Some((frames::NO_ERROR, debug.to_owned())));
    let goaway_at = heard.goaway_at.expect("a GOAWAY");
    assert!(at.contains(&goaway_at), "{debug} GOAWAY at {goaway_at:?}");
    let closed_at = heard.closed_at.expect("closed");
    assert!(closed_at >= goaway_at + grace, "{closed_at:?}");
}

/// The sum of a counter's series whose labels contain `label`.
async fn counter(tb: &Testbed, name: &str, label: &str) -> f64 {
    let (_, body) = scrape(tb.metrics_addr, "text/plain").await;
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU time (user + system) of process `pid`, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz: u64 = String::from_utf8(
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    Duration::from_millis(ticks * 1000 / hz)
}

/// One health check on a new connection, within `limit`.
async fn serving_on_new_connection(tb: &Testbed, limit: Duration) -> bool {
    let check = async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", tb.addr))
            .unwrap()
            .connect()
            .await
            .ok()?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .ok()?;
        Some(reply.into_inner().status() == ServingStatus::Serving)
    };
    matches!(tokio::time::timeout(limit, check).await, Ok(Some(true)))
}

/// Under a 256-descriptor limit, a flood of 600 connections sending the
/// preface and SETTINGS and then nothing: the server (cap set above the
/// limit, so accept fails with EMFILE) uses under 20% of a core over 2 s
/// while the flood is held, counts the failures and logs one warning for
/// them, and once the flood closes a fresh connection is SERVING within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_flood_neither_spins_nor_outlasts_itself() {
    let tb = Testbed::start_logged(
        &[
            "all",
            "--max-connections",
            "100000",
            "--handshake-timeout",
            "60s",
        ],
        &[],
    );
    tb.wait_serving("").await;
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &tb.pid().to_string(), "--nofile=256:256"])
        .status()
        .unwrap();
    assert!(status.success(), "prlimit failed");

    // The flood: connections the kernel completes whether or not the
    // server accepts them (up to the listen backlog).
    let mut flood = Vec::new();
    for _ in 0..600 {
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(tb.addr)).await {
            Ok(Ok(mut stream)) => {
                let _ = stream.write_all(&handshake()).await;
                flood.push(stream);
            }
            _ => break,
        }
    }
    assert!(flood.len() > 300, "only {} connections opened", flood.len());
    // Let the server run into the limit, then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_time(tb.pid());
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_time(tb.pid()) - before;
    let share = used.as_secs_f64() / window.elapsed().as_secs_f64();
    eprintln!(
        "flood of {}: server CPU {:.1}% of a core over {:?}",
        flood.len(),
        share * 100.0,
        window.elapsed()
    );
    assert!(share < 0.20, "server used {:.0}% of a core", share * 100.0);

    drop(flood);
    let freed = Instant::now();
    let mut served = false;
    while freed.elapsed() < Duration::from_secs(2) {
        if serving_on_new_connection(&tb, Duration::from_millis(500)).await {
            served = true;
            break;
        }
    }
    eprintln!(
        "SERVING on a new connection {:?} after the flood closed",
        freed.elapsed()
    );
    assert!(served, "no SERVING within 2 s of the flood's end");
    let emfile = counter(&tb, "server_accept_errors_total", "kind=\"emfile\"").await;
    assert!(emfile >= 1.0, "EMFILE not counted: {emfile}");
    // Logged at a bounded rate: one warning per 10 s, however many failed.
    let warnings = tb.log().matches("accept failed; backing off").count();
    assert_eq!(warnings, 1, "{emfile} failures, {warnings} warnings");
}

/// Past --max-connections a connection takes one of the
/// --reserved-connections slots, closed within about 2 s; past those it is
/// closed at once and counted. With the cap full of held connections, a
/// new health check (a kubelet probe) is still answered once the reserved
/// slots have turned over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_only_short_lived_reserved_slots() {
    let tb = Testbed::start(&[
        "all",
        "--max-connections",
        "20",
        "--reserved-connections",
        "2",
        "--handshake-timeout",
        "60s",
    ]);
    tb.wait_serving("").await;
    // The readiness check's own connection must be gone before the count.
    let deadline = Instant::now() + Duration::from_secs(2);
    while counter(&tb, "server_connections_open", "").await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the health check's connection stayed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = counter(&tb, "server_connections_refused_total", "").await;
    let mut held = Vec::new();
    for _ in 0..30 {
        let mut stream = TcpStream::connect(tb.addr).await.unwrap();
        stream.write_all(&handshake()).await.unwrap();
        held.push(stream);
    }
    // Read every connection for 3 s at once: the capped ones stay open and
    // silent, the reserved ones get GOAWAY and a close, the rest a close
    // without a byte.
    let heard = futures::future::join_all(
        held.iter_mut()
            .map(|stream| listen(stream, Duration::from_secs(3))),
    )
    .await;
    let open = heard.iter().filter(|h| h.closed_at.is_none()).count();
    let reserved: Vec<_> = heard
        .iter()
        .filter(|h| h.goaway.as_ref().is_some_and(|(_, why)| why == "max_age"))
        .map(|h| h.closed_at.expect("closed"))
        .collect();
    let refused = heard
        .iter()
        .filter(|h| h.closed_at.is_some() && h.headers.is_empty())
        .count();
    assert_eq!((open, reserved.len(), refused), (20, 2, 8), "{heard:?}");
    assert!(
        reserved.iter().all(|at| *at < Duration::from_millis(2500)),
        "{reserved:?}"
    );
    let counted = counter(&tb, "server_connections_refused_total", "").await - before;
    assert_eq!(counted, 8.0);
    // The cap is still full; a probe gets a reserved slot.
    assert!(serving_on_new_connection(&tb, Duration::from_secs(2)).await);
    drop(held);
}

/// A connection that never completes the handshake is closed after
/// --handshake-timeout; one that does and then opens no call gets GOAWAY
/// NO_ERROR "max_idle" after --idle-timeout and is closed after the grace;
/// both are counted by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed() {
    let tb = Testbed::start(&[
        "all",
        "--handshake-timeout",
        "300ms",
        "--idle-timeout",
        "600ms",
        "--max-connection-age-grace",
        "300ms",
    ]);
    tb.wait_serving("").await;

    let mut silent = TcpStream::connect(tb.addr).await.unwrap();
    let mut half = TcpStream::connect(tb.addr).await.unwrap();
    half.write_all(&PREFACE[..10]).await.unwrap();
    let mut idle = TcpStream::connect(tb.addr).await.unwrap();
    idle.write_all(&handshake()).await.unwrap();
    let (silent, half, idle) = tokio::join!(
        listen(&mut silent, Duration::from_secs(5)),
        listen(&mut half, Duration::from_secs(5)),
        listen(&mut idle, Duration::from_secs(5)),
    );
    for heard in [&silent, &half] {
        let at = heard.closed_at.expect("closed");
        assert!(
            at >= Duration::from_millis(250) && at < Duration::from_secs(2),
            "handshake timeout closed at {at:?}"
        );
        assert!(heard.goaway.is_none());
    }
    assert_goaway_then_close(
        &idle,
        "max_idle",
        Duration::from_millis(550)..Duration::from_secs(2),
        Duration::from_millis(250),
    );

    assert_eq!(
        counter(
            &tb,
            "server_connections_closed_total",
            "reason=\"handshake_timeout\""
        )
        .await,
        2.0
    );
    assert_eq!(
        counter(&tb, "server_connections_closed_total", "reason=\"idle\"").await,
        1.0
    );
}

/// --max-connection-age: GOAWAY NO_ERROR "max_age" at that age (not only
/// a close at age + grace, as tonic's own setting does), then the close
/// after --max-connection-age-grace; counted as age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_connections_get_goaway_then_close() {
    let tb = Testbed::start(&[
        "all",
        "--max-connection-age",
        "400ms",
        "--max-connection-age-grace",
        "400ms",
    ]);
    tb.wait_serving("").await;
    let mut conn = TcpStream::connect(tb.addr).await.unwrap();
    conn.write_all(&handshake()).await.unwrap();
    let heard = listen(&mut conn, Duration::from_secs(5)).await;
    assert_goaway_then_close(
        &heard,
        "max_age",
        Duration::from_millis(350)..Duration::from_millis(1500),
        Duration::from_millis(350),
    );
    assert_eq!(
        counter(&tb, "server_connections_closed_total", "reason=\"age\"").await,
        1.0
    );
}

/// A connection with a call open is not idle: a PublishStream open past
/// --idle-timeout still gets its batch acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_keeps_its_connection() {
    use testbed_proto::v1::PublishStreamRequest;
    use testbed_proto::v1::ingest_service_client::IngestServiceClient;
    let tb = Testbed::start(&["all", "--idle-timeout", "300ms"]);
    tb.wait_serving("testbed.v1.IngestService").await;
    let mut client = IngestServiceClient::new(tb.channel().await);
    let (tx, rx) = tokio::sync::mpsc::channel::<PublishStreamRequest>(1);
    let mut acks = client
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let event = common::pipeline::event("idle", 1, 1, common::pipeline::test_minute());
    tx.send(PublishStreamRequest {
        sequence: 1,
        events: vec![event],
        ..Default::default()
    })
    .await
    .unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(5), acks.message())
        .await
        .expect("ack within 5 s");
    assert!(matches!(ack, Ok(Some(_))), "{ack:?}");
}

/// A client pinging every 20 ms with a call open gets GOAWAY
/// ENHANCE_YOUR_CALM "too_many_pings" at its third strike and is closed;
/// counted as ping_policy. (The grpcio client's view is in
/// tests/interop/test_transport.py.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_gets_too_many_pings() {
    let tb = Testbed::start(&["all"]);
    tb.wait_serving("").await;
    let mut stream = TcpStream::connect(tb.addr).await.unwrap();
    stream.write_all(&handshake()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let pinger = tokio::spawn(async move {
        for i in 0u64..100 {
            let ping = frame(kind::PING, 0, 0, &i.to_be_bytes());
            if write.write_all(&ping).await.is_err() {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        100
    });
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut closed = false;
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let sent = pinger.await.unwrap();
    assert!(closed, "not closed");
    assert_eq!(
        goaway_in(&bytes),
        Some((frames::ENHANCE_YOUR_CALM, "too_many_pings".to_owned()))
    );
    assert!(
        sent < 100,
        "the server kept the connection for {sent} pings"
    );
    assert_eq!(
        counter(
            &tb,
            "server_connections_closed_total",
            "reason=\"ping_policy\""
        )
        .await,
        1.0
    );
}

/// Rapid reset (CVE-2023-44487): a client opening and resetting streams
/// in a burst has its connection closed with GOAWAY, and the server stays
/// SERVING for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_closes_the_connection() {
    let tb = Testbed::start(&["all"]);
    tb.wait_serving("").await;
    let mut stream = TcpStream::connect(tb.addr).await.unwrap();
    stream.write_all(&handshake()).await.unwrap();
    let mut burst = Vec::new();
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        burst.extend(health_check_headers(id));
        burst.extend(frame(0x3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move { write.write_all(&burst).await.is_ok() });
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let _ = writer.await;
    assert!(closed, "the connection survived 5000 rapid resets");
    let goaway = goaway_in(&bytes);
    eprintln!("rapid reset: GOAWAY {goaway:?}");
    assert!(
        matches!(goaway, Some((code, _)) if code == frames::ENHANCE_YOUR_CALM),
        "{goaway:?}"
    );
    assert!(serving_on_new_connection(&tb, Duration::from_secs(2)).await);
}
