//! Binding listeners with errors a user can act on.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::ListenArgs;

/// Why a server could not start listening.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address is taken, not local, or not permitted.
    #[error("cannot listen on {flag} {addr}: {source}")]
    Bind {
        /// The flag that named the address.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The `--addr-file` could not be written.
    #[error("cannot write --addr-file {path}: {source}")]
    AddrFile {
        /// The file.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The tokens could not be loaded.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The TLS files could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The bound listeners of one process.
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC listener.
    pub grpc: TcpListener,
    /// The address it is bound to (the real port when port 0 was asked).
    pub grpc_addr: SocketAddr,
    /// The Prometheus `/metrics` listener, until someone takes it to serve.
    pub metrics: Option<TcpListener>,
    /// Its address.
    pub metrics_addr: SocketAddr,
    /// `--shutdown-grace`.
    pub grace: std::time::Duration,
    /// `--health-interval`.
    pub health_interval: std::time::Duration,
    /// Every transport and request limit (`--max-connections` and the rest).
    pub limits: crate::limits::Limits,
    /// The tokens of `--auth-tokens-file`/`--auth-tokens`; none: auth off.
    pub auth: Option<std::sync::Arc<crate::auth::TokenSet>>,
    /// TLS of the gRPC listener (`--tls-cert`); none: plaintext.
    pub tls: Option<std::sync::Arc<crate::tls::TlsServer>>,
    /// The plaintext health-only listener (`--probe-addr`), if asked for.
    pub probe: Option<TcpListener>,
    /// Its address.
    pub probe_addr: Option<SocketAddr>,
}

/// When a client connection is closed for its age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionAge {
    /// Age at which the server sends GOAWAY.
    pub max: std::time::Duration,
    /// How long open calls may still run on it after that.
    pub grace: std::time::Duration,
}

/// Binds the listeners named by `args` and, when asked, writes their
/// addresses to `--addr-file`.
pub async fn bind(args: &ListenArgs) -> Result<Listeners, BindError> {
    // Tokens and TLS files first: a bad file stops the process before it
    // listens.
    let auth = args.auth.load()?;
    let tls = args.tls.load()?;
    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .map_err(|source| BindError::Bind {
            flag: "--grpc-addr",
            addr: args.grpc_addr,
            source,
        })?;
    let grpc_addr = grpc.local_addr().map_err(|source| BindError::Bind {
        flag: "--grpc-addr",
        addr: args.grpc_addr,
        source,
    })?;
    let metrics = TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| BindError::Bind {
            flag: "--metrics-addr",
            addr: args.metrics_addr,
            source,
        })?;
    let metrics_addr = metrics.local_addr().map_err(|source| BindError::Bind {
        flag: "--metrics-addr",
        addr: args.metrics_addr,
        source,
    })?;
    let (probe, probe_addr) = match args.probe_addr {
        Some(addr) => {
            let bind_error = |source| BindError::Bind {
                flag: "--probe-addr",
                addr,
                source,
            };
            let probe = TcpListener::bind(addr).await.map_err(bind_error)?;
            let bound = probe.local_addr().map_err(bind_error)?;
            (Some(probe), Some(bound))
        }
        None => (None, None),
    };
    if let Some(path) = &args.addr_file {
        let announced = crate::addr_file::Announced {
            grpc: grpc_addr,
            metrics: Some(metrics_addr),
            probe: probe_addr,
        };
        crate::addr_file::write(path, &announced).map_err(|source| BindError::AddrFile {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(Listeners {
        grpc,
        grpc_addr,
        metrics: Some(metrics),
        metrics_addr,
        grace: args.shutdown_grace,
        health_interval: args.health_interval,
        limits: crate::limits::Limits::from_args(args),
        auth,
        tls,
        probe,
        probe_addr,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn args(addr: &str, addr_file: Option<std::path::PathBuf>) -> ListenArgs {
        let mut args = testbed_flags::defaults::<ListenArgs>().unwrap();
        args.grpc_addr = addr.parse().unwrap();
        args.metrics_addr = "127.0.0.1:0".parse().unwrap();
        args.shutdown_grace = Duration::from_secs(1);
        args.addr_file = addr_file;
        args
    }

    /// Port 0 binds a real port, which the addr file reports.
    #[tokio::test]
    async fn port_zero_is_discoverable() {
        let path = std::env::temp_dir().join(format!("testbed-addr-{}.json", std::process::id()));
        let listeners = bind(&args("127.0.0.1:0", Some(path.clone())))
            .await
            .unwrap();
        assert_ne!(listeners.grpc_addr.port(), 0);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.trim(),
            format!(
                "{{\"grpc\":\"{}\",\"metrics\":\"{}\"}}",
                listeners.grpc_addr, listeners.metrics_addr
            )
        );
        let _ = std::fs::remove_file(path);
    }

    /// A port in use is a one-line error naming the flag and the address.
    #[tokio::test]
    async fn port_in_use_names_flag_and_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(&args(&addr.to_string(), None)).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot listen on --grpc-addr {addr}: ")),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }
}
