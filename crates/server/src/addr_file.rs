//! The address file (`--addr-file`): how a process bound to port 0 tells
//! whoever started it where it listens. Written by [`crate::bind`] (and by
//! the benchmark harness's own helper servers), read by the harness and
//! the integration tests: one format, one writer, one reader.
//!
//! The file is one JSON object, `{"grpc":"HOST:PORT","metrics":"HOST:PORT"}`
//! (`metrics` absent for a process without a `/metrics` listener; `probe`
//! present for one with a `--probe-addr` listener), written
//! under a temporary name and renamed, so a reader polling for it never
//! sees it half-written.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// The addresses a process announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// The gRPC listener.
    pub grpc: SocketAddr,
    /// The Prometheus `/metrics` listener, if the process has one.
    pub metrics: Option<SocketAddr>,
    /// The plaintext health-only listener (`--probe-addr`), if any.
    pub probe: Option<SocketAddr>,
}

/// Writes `announced` to `path` atomically (a temporary file, synced, then
/// renamed).
pub fn write(path: &Path, announced: &Announced) -> std::io::Result<()> {
    let mut json = serde_json::json!({ "grpc": announced.grpc.to_string() });
    if let Some(metrics) = announced.metrics {
        json["metrics"] = metrics.to_string().into();
    }
    if let Some(probe) = announced.probe {
        json["probe"] = probe.to_string().into();
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    writeln!(file, "{json}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads the addresses announced in `path`: `None` while the file does not
/// exist yet, an error naming the problem if it is not what [`write`]
/// writes.
pub fn read(path: &Path) -> Option<Result<Announced, String>> {
    let bytes = std::fs::read(path).ok()?;
    Some(parse(&bytes).map_err(|why| format!("{}: {why}", path.display())))
}

fn parse(bytes: &[u8]) -> Result<Announced, String> {
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let addr = |key: &str| -> Result<Option<SocketAddr>, String> {
        json.get(key)
            .map(|v| {
                v.as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("{key:?} is not HOST:PORT: {v}"))
            })
            .transpose()
    };
    Ok(Announced {
        grpc: addr("grpc")?.ok_or("no \"grpc\" address")?,
        metrics: addr("metrics")?,
        probe: addr("probe")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is written is what is read, with or without a metrics address;
    /// a missing file is not yet there, a bad one an error.
    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("addr-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.json");
        assert_eq!(read(&path), None);
        for metrics in [Some("127.0.0.1:9464".parse().unwrap()), None] {
            let announced = Announced {
                grpc: "127.0.0.1:50051".parse().unwrap(),
                metrics,
                probe: metrics.map(|_| "127.0.0.1:8086".parse().unwrap()),
            };
            write(&path, &announced).unwrap();
            assert_eq!(read(&path), Some(Ok(announced)));
        }
        std::fs::write(&path, r#"{"grpc":"nowhere"}"#).unwrap();
        assert!(
            read(&path)
                .unwrap()
                .unwrap_err()
                .contains("\"grpc\" is not HOST:PORT")
        );
        std::fs::write(&path, r#"{"metrics":"127.0.0.1:1"}"#).unwrap();
        assert!(
            read(&path)
                .unwrap()
                .unwrap_err()
                .contains("no \"grpc\" address")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
