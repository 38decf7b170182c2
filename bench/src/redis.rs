//! A fresh `redis-server` per measurement: loopback, a free port, no
//! persistence (no RDB snapshots, no AOF), in its own directory.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Context as _, Error, Result};
use crate::process::Proc;

/// A running `redis-server`.
#[derive(Debug)]
pub struct Redis {
    proc: Proc,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// A port that was free a moment ago (bind to port 0, read, release).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context(|| "binding a free port")?;
    Ok(listener
        .local_addr()
        .context(|| "reading a bound port")?
        .port())
}

impl Redis {
    /// Starts `redis_server` in `dir` (created) and waits until it answers
    /// PING. A port taken between probing and binding is retried.
    pub async fn start(redis_server: &Path, dir: &Path) -> Result<Self> {
        Self::start_with(redis_server, dir, &["--appendonly", "no"]).await
    }

    /// [`Redis::start`] with `extra` settings after the harness's own (no
    /// RDB snapshots; `extra` chooses the AOF and cluster settings).
    pub async fn start_with(redis_server: &Path, dir: &Path, extra: &[&str]) -> Result<Self> {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::start_on(redis_server, dir, free_port()?, extra).await {
                Ok(redis) => return Ok(redis),
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::Process(format!(
            "redis-server ({}) did not start: {last}",
            redis_server.display()
        )))
    }

    /// Starts `redis_server` on `port` (a node restarted where it was,
    /// with its data in `dir`) and waits until it answers PING.
    pub async fn start_on(
        redis_server: &Path,
        dir: &Path,
        port: u16,
        extra: &[&str],
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--protected-mode",
            "no",
            "--dir",
            &dir.display().to_string(),
        ]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect();
        let mut proc = Proc::spawn(
            "redis-server",
            redis_server,
            &args,
            &[],
            &[],
            &dir.join("redis.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if command(port, &["PING"]).is_ok_and(|r| r == "+PONG") {
                return Ok(Self { proc, port });
            }
            if let Some(status) = proc.try_exit()? {
                return Err(Error::Process(format!(
                    "port {port}: exited with {status} (see {})",
                    proc.log().display()
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::Process(format!("port {port}: no PONG within 10 s")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id, for footprint readings.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Stops the server (SIGTERM; no persistence, so it exits at once).
    pub async fn stop(self) -> Result<()> {
        self.proc.terminate(Duration::from_secs(5)).await?;
        Ok(())
    }

    /// SIGKILL: it dies as a crashed node would.
    pub async fn kill(self) -> Result<()> {
        self.proc.kill().await?;
        Ok(())
    }
}

/// Sends one command in RESP and returns the first reply line.
pub fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte)? == 1 {
        if byte[0] == b'\n' {
            break;
        }
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

/// Sends one command and returns its whole reply when that is a status,
/// an integer or a bulk string (`INFO`, `CLUSTER INFO`); the first line of
/// anything else.
pub fn command_text(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = std::io::BufReader::new(TcpStream::connect(("127.0.0.1", port))?);
    stream
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.get_mut().write_all(request.as_bytes())?;
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stream, &mut first)?;
    let first = first.trim_end();
    let Some(len) = first
        .strip_prefix('$')
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return Ok(first.to_owned());
    };
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The directory of one Redis instance under `work`.
pub fn dir_for(work: &Path, name: &str) -> PathBuf {
    work.join(name).join("redis")
}
