//! Test harness: real `redis-server` processes on free ports, the
//! `testbed` binary's process harness ([`process`]), test events
//! ([`events`]), and an OTLP receiver ([`otlp`]) for the tests and the
//! bench's telemetry sink.
//!
//! Tests never use a Redis they did not start: each gets its own server (or
//! a three-master Redis Cluster, with replicas where failover is tested) on
//! loopback ports, without persistence, in
//! a temporary directory, killed on drop. So tests run in parallel and on
//! any machine with `redis-server` installed (`scripts/setup-tools`
//! installs it). Readiness is a real `PING` (and `cluster_state:ok`), never
//! a sleep.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod events;
pub mod otlp;
pub mod process;
pub mod tls;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The settings of a Redis node that keeps every acknowledged write across
/// a restart or a failover: every write in the AOF before the reply, and a
/// node back after a failover gets its copy at once, not after the default
/// 5 s wait for other replicas (deploy's redis.conf sets the same).
pub const DURABLE_NODE: [&str; 6] = [
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--repl-diskless-sync-delay",
    "0",
];

/// A `redis-server` on a free loopback port.
pub struct RedisServer {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = temp_dir("redis");
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                child: None,
                port,
                dir: dir.clone(),
                extra: extra.clone(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server (is it installed? run scripts/setup-tools)");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: a Redis outage); [`RedisServer::restart`]
    /// brings it back on the same port and data directory (empty unless it
    /// was started with persistence, e.g. `--appendonly yes`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing
    /// answers, as with a Redis stalled by a slow disk or a paused VM.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("the server runs");
        let status = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", child.id());
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server and starts it again on the same port with its data
    /// directory emptied: a Redis that comes back with nothing (no AOF, a
    /// lost volume).
    pub fn restart_empty(&mut self) {
        self.stop();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
        self.restart();
    }

    /// Whether the server process is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `INFO <section>`, the whole text.
    pub fn info(&self, section: &str) -> String {
        command(self.port, &["INFO", section])
    }

    /// Sends one command in RESP and returns the raw first reply line.
    pub fn command(&self, args: &[&str]) -> String {
        command(self.port, args)
    }

    fn spawn(&mut self) -> bool {
        let mut child = match Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(err) => panic!("cannot run redis-server: {err} (run scripts/setup-tools)"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The server answering must be this child: with tests choosing
            // free ports in parallel, another test's server can hold the
            // port (this child then fails to bind and exits), and sharing
            // it would mix the two tests' data.
            match server_pid(self.port) {
                // Ours, and done loading its data (PING answers LOADING
                // until then).
                Some(pid) if pid == child.id() && ping(self.port) => {
                    self.child = Some(child);
                    return true;
                }
                Some(pid) if pid == child.id() => {}
                Some(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
                None => {}
            }
            if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster on free loopback ports: three masters, and with
/// [`RedisCluster::start_with_replicas`] a replica of each.
pub struct RedisCluster {
    /// The nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with
    /// `redis-cli --cluster create`, and waits for `cluster_state:ok`.
    pub fn start() -> Self {
        Self::create(3, 0, &["--cluster-node-timeout", "2000"])
    }

    /// Three masters and a replica of each (six servers), failing over
    /// after `--cluster-node-timeout 1000`, every write to the AOF
    /// (`appendfsync always`); waits for `cluster_state:ok` and for every
    /// replica to be in sync with its master.
    pub fn start_with_replicas() -> Self {
        let cluster = Self::create(
            6,
            1,
            &[&["--cluster-node-timeout", "1000"][..], &DURABLE_NODE].concat(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &cluster.nodes {
            while node.info("replication").contains("role:slave")
                && !node.info("replication").contains("master_link_status:up")
            {
                assert!(
                    Instant::now() < deadline,
                    "replica {} not in sync",
                    node.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    fn create(count: usize, replicas: u32, extra: &[&str]) -> Self {
        let nodes: Vec<RedisServer> = (0..count)
            .map(|i| {
                let config = format!("nodes-{i}.conf");
                let mut args = vec!["--cluster-enabled", "yes", "--cluster-config-file", &config];
                args.extend_from_slice(extra);
                RedisServer::start_with(&args)
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli (package redis-tools)");
        assert!(output.status.success(), "cluster create failed: {output:?}");
        let cluster = Self { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Waits (30 s at most) until every running node reports
    /// `cluster_state:ok`.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            loop {
                let info = node.command(&["CLUSTER", "INFO"]);
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok: {info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Seed URLs, comma-separated, for `--redis-url` with `--redis-cluster`:
    /// every node's (a client then finds the cluster whichever have died).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The indexes of the running masters.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].is_running()
                    && self.nodes[i].info("replication").contains("role:master")
            })
            .collect()
    }

    /// The index of the running replica of master `master`, if any.
    pub fn replica_of(&self, master: usize) -> Option<usize> {
        let port = format!("master_port:{}", self.nodes[master].port);
        (0..self.nodes.len()).find(|&i| {
            i != master && self.nodes[i].is_running() && {
                let info = self.nodes[i].info("replication");
                info.contains("role:slave") && info.lines().any(|l| l.trim() == port)
            }
        })
    }

    /// Waits (30 s at most) until node `node` is a replica whose link to
    /// its master is up (synced).
    pub fn wait_replica_in_sync(&self, node: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = self.nodes[node].info("replication");
            if info.contains("role:slave") && info.contains("master_link_status:up") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {node} not a synced replica: {info}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (30 s at most) until node `node` is a master.
    pub fn wait_master(&self, node: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.nodes[node].info("replication").contains("role:master") {
            assert!(Instant::now() < deadline, "node {node} not promoted");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn temp_dir(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "testbed-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A port that was free a moment ago (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// The process id of the Redis answering on `port` (`INFO server`), if one
/// answers.
fn server_pid(port: u16) -> Option<u32> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream
        .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let len: usize = first.trim_end().strip_prefix('$')?.parse().ok()?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

fn command(port: u16, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    if let Some(len) = first.strip_prefix('$') {
        let len: i64 = len.trim().parse().unwrap_or(-1);
        if len < 0 {
            return String::new();
        }
        let mut body = vec![0u8; len as usize + 2];
        reader.read_exact(&mut body).unwrap();
        return String::from_utf8_lossy(&body[..len as usize]).into_owned();
    }
    first.trim_end().to_owned()
}
