//! [`TlsServer`]: the TLS configuration new connections get, re-read when
//! its files change.
//!
//! Kubernetes updates a mounted Secret in place (a new directory, then a
//! symlink swap), so a certificate rotated by cert-manager shows up as new
//! file contents under the same path, a minute or so after the Secret
//! changed. The files are polled: read every `--tls-reload-interval` (5 s)
//! and compared with what was last loaded. Why polling and not `notify`
//! (inotify): the swap replaces the watched file's parent symlink, which
//! inotify reports on the directory, not the file, and differently on
//! overlay, NFS and ConfigMap mounts; a watcher must be re-armed after each
//! swap. Reading three files of a few KiB every few seconds costs nothing
//! measurable and behaves the same on every filesystem, and comparing
//! contents (not mtimes) also sees a rewrite within one second.
//!
//! A change that does not load (a half-written pair, a key that does not
//! match, garbage) keeps the previous configuration and logs one warning
//! per distinct content; the next change is tried again. Connections
//! already open keep the certificate they were made with.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::files::{Contents, TlsError, TlsFiles};
use super::stream::Transport;

/// The TLS instruments (at `/metrics` and over OTLP).
#[derive(Debug, Clone)]
pub struct TlsMetrics {
    /// `server_tls_handshake_failures_total{reason}`: see
    /// [`crate::tls::stream::failure_reason`].
    pub handshake_failures: Counter<u64>,
    /// `server_tls_reloads_total{result}`: `ok` (new files in use) or
    /// `error` (the previous certificate kept).
    pub reloads: Counter<u64>,
}

impl Default for TlsMetrics {
    fn default() -> Self {
        let meter = opentelemetry::global::meter("testbed-server");
        let metrics = Self {
            handshake_failures: meter
                .u64_counter("server.tls.handshake_failures")
                .with_description("TLS handshakes that failed, by reason")
                .build(),
            reloads: meter
                .u64_counter("server.tls.reloads")
                .with_description(
                    "Changed TLS files loaded (ok) or refused, keeping the previous certificate (error)",
                )
                .build(),
        };
        for reason in super::stream::FAILURE_REASONS {
            metrics
                .handshake_failures
                .add(0, &[KeyValue::new("reason", reason)]);
        }
        for result in ["ok", "error"] {
            metrics.reloads.add(0, &[KeyValue::new("result", result)]);
        }
        metrics
    }
}

/// What one look at the files found.
#[derive(Debug)]
pub enum Reload {
    /// The same contents as last time.
    Unchanged,
    /// New contents, in use for new connections from now on.
    Reloaded,
    /// New contents that do not load; the previous configuration stays.
    Refused(TlsError),
}

/// What [`TlsServer::reload`] last saw.
#[derive(Debug)]
struct Seen {
    /// The contents last tried (loaded or refused).
    contents: Option<Contents>,
    /// The read error of the last look, if the files could not be read.
    unreadable: Option<String>,
}

/// The TLS side of one server: the configuration in use and its files.
#[derive(Debug)]
pub struct TlsServer {
    files: TlsFiles,
    interval: Duration,
    current: ArcSwap<rustls::ServerConfig>,
    /// What the last look found: a refused change is warned about once,
    /// not at every poll.
    seen: Mutex<Seen>,
    metrics: TlsMetrics,
}

impl TlsServer {
    /// Loads `files` (any error stops the process before it listens);
    /// [`TlsServer::watch`] re-reads them every `interval`.
    pub fn load(files: TlsFiles, interval: Duration) -> Result<Arc<Self>, TlsError> {
        let contents = files.read()?;
        let config = files.build(&contents)?;
        Ok(Arc::new(Self {
            files,
            interval,
            current: ArcSwap::from_pointee(config),
            seen: Mutex::new(Seen {
                contents: Some(contents),
                unreadable: None,
            }),
            metrics: TlsMetrics::default(),
        }))
    }

    /// Whether client certificates are required (`--tls-client-ca`).
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Starts the handshake of an accepted socket with the configuration
    /// in use now; [`Transport`] completes it on first use.
    pub fn accept(&self, stream: TcpStream) -> Transport {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load_full());
        Transport::handshaking(acceptor.accept(stream), self.metrics.clone())
    }

    /// Reads the files once and swaps the configuration if they changed
    /// and load.
    pub fn reload(&self) -> Reload {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let contents = match self.files.read() {
            Ok(contents) => contents,
            Err(err) => {
                // Warned about once while it stays the same error.
                let text = err.to_string();
                if seen.unreadable.as_deref() == Some(text.as_str()) {
                    return Reload::Unchanged;
                }
                seen.unreadable = Some(text);
                return self.refused(err);
            }
        };
        seen.unreadable = None;
        if seen.contents.as_ref() == Some(&contents) {
            return Reload::Unchanged;
        }
        let built = self.files.build(&contents);
        seen.contents = Some(contents);
        match built {
            Ok(config) => {
                self.current.store(Arc::new(config));
                self.metrics
                    .reloads
                    .add(1, &[KeyValue::new("result", "ok")]);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    "TLS files changed; new connections get the new certificate"
                );
                Reload::Reloaded
            }
            Err(err) => self.refused(err),
        }
    }

    fn refused(&self, err: TlsError) -> Reload {
        self.metrics
            .reloads
            .add(1, &[KeyValue::new("result", "error")]);
        tracing::warn!(error = %err, "changed TLS files do not load; keeping the previous certificate");
        Reload::Refused(err)
    }

    /// Re-reads the files every `--tls-reload-interval` until `shutdown`
    /// (never when the interval is zero).
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        if self.interval.is_zero() {
            return;
        }
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            // File reads are quick but blocking; a few KiB every few seconds
            // does not warrant a blocking-pool hop.
            let _ = self.reload();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn leaf() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    /// A look at unchanged files changes nothing; a new pair is loaded; a
    /// garbage or mismatched replacement is refused once (not at every
    /// poll) and the last good configuration stays; a missing file is
    /// refused once too.
    #[test]
    fn reload_swaps_only_good_changes_and_refuses_each_bad_one_once() {
        let dir = std::env::temp_dir().join(format!("testbed-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles {
            cert: dir.join("c.pem"),
            key: dir.join("k.pem"),
            client_ca: None,
        };
        let (cert, key) = leaf();
        write(&files.cert, &cert);
        write(&files.key, &key);
        let server = TlsServer::load(files.clone(), Duration::from_secs(1)).unwrap();
        let first = server.current.load_full();
        assert!(matches!(server.reload(), Reload::Unchanged));

        let (cert, key) = leaf();
        write(&files.cert, &cert);
        write(&files.key, &key);
        assert!(matches!(server.reload(), Reload::Reloaded));
        let second = server.current.load_full();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(matches!(server.reload(), Reload::Unchanged));

        let (_, other_key) = leaf();
        write(&files.key, &other_key);
        assert!(matches!(
            server.reload(),
            Reload::Refused(TlsError::Mismatch { .. })
        ));
        assert!(matches!(server.reload(), Reload::Unchanged));
        assert!(Arc::ptr_eq(&second, &server.current.load_full()));

        std::fs::remove_file(&files.cert).unwrap();
        assert!(matches!(
            server.reload(),
            Reload::Refused(TlsError::Read { .. })
        ));
        assert!(matches!(server.reload(), Reload::Unchanged));
        assert!(Arc::ptr_eq(&second, &server.current.load_full()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
