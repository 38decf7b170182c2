//! [`TlsArgs`]: the TLS flags every server shares.

use std::path::PathBuf;
use std::time::Duration;

/// TLS of the gRPC listener. Off unless `--tls-cert` is given.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain the gRPC port presents (leaf first). Turns TLS
    /// on: plaintext clients are then refused. Re-read when the file
    /// changes (see --tls-reload-interval).
    #[arg(long, env = "TESTBED_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TESTBED_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s) client certificates must chain to: turns on
    /// mutual TLS (a client without a certificate signed by one of them is
    /// refused during the handshake). Re-read like --tls-cert.
    #[arg(long, env = "TESTBED_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the TLS files are read again; a change is used for new
    /// connections from then on (a file that does not load keeps the
    /// previous certificate and logs a warning). `0s`: never re-read.
    #[arg(
        long,
        env = "TESTBED_TLS_RELOAD_INTERVAL",
        default_value = "5s",
        value_parser = humantime::parse_duration
    )]
    pub tls_reload_interval: Duration,
}

impl TlsArgs {
    /// The server side, loaded and checked; none when TLS is off.
    pub fn load(&self) -> Result<Option<std::sync::Arc<super::TlsServer>>, super::TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let files = super::files::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
        };
        super::TlsServer::load(files, self.tls_reload_interval).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        tls: TlsArgs,
    }

    /// TLS is off by default; the key and the client CA need a certificate.
    #[test]
    fn off_by_default_and_paired() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert!(cli.tls.tls_cert.is_none());
        assert_eq!(cli.tls.tls_reload_interval, Duration::from_secs(5));
        for flag in ["--tls-key", "--tls-client-ca"] {
            let err = Cli::try_parse_from(["x", flag, "/a"]).unwrap_err();
            assert!(err.to_string().contains("--tls-cert"), "{err}");
        }
        let err = Cli::try_parse_from(["x", "--tls-cert", "/a"]).unwrap_err();
        assert!(err.to_string().contains("--tls-key"), "{err}");
    }
}
