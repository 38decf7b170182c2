//! The simulator's client TLS flags ([`ClientTlsArgs`]), which build the
//! Rust client's [`ClientTls`] (one type for every client of the project):
//! how its channels speak TLS to `https://` (and, with `--tls-ca`,
//! `dns:///`) targets.
//!
//! tonic's `ClientTlsConfig` (rustls, the ring provider the process
//! installs once in `main`) does the work; no system roots are loaded, so
//! an `https://` target needs `--tls-ca`. The files are read when the
//! flags are parsed (an unreadable one is a usage error, exit 2); a CLI run
//! uses the certificate it started with. `sim --serve` lives for weeks
//! while cert-manager rotates the files, so [`ReloadingTls`] reads them
//! again at each run's start, keeping the last good ones when a file is
//! unreadable mid-rotation.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

/// A PEM file, read when the flags are parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFile {
    /// Where it was read.
    pub path: PathBuf,
    /// What it holds.
    pub pem: Vec<u8>,
}

/// Reads a PEM file for a flag: an error names the file and says why.
pub fn read_pem(value: &str) -> Result<PemFile, String> {
    let pem = std::fs::read(value).map_err(|e| format!("cannot read {value}: {e}"))?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!("{value} holds no PEM block"));
    }
    Ok(PemFile {
        path: PathBuf::from(value),
        pem,
    })
}

/// The simulator's client TLS flags (`testbed sim`, both modes: with
/// `--serve`, its runs connect this way).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM CA certificate(s) that `https://` targets' certificates must
    /// chain to (needed for them: no system roots are loaded). With it, a
    /// `dns:///` target's addresses are reached over TLS too, verified
    /// against the name.
    #[arg(long, env = "TESTBED_TLS_CA", value_parser = read_pem)]
    pub tls_ca: Option<PemFile>,

    /// PEM client certificate presented to servers that require one
    /// (their --tls-client-ca): mutual TLS.
    #[arg(long, env = "TESTBED_TLS_CLIENT_CERT", requires = "tls_client_key", value_parser = read_pem)]
    pub tls_client_cert: Option<PemFile>,

    /// PEM private key of --tls-client-cert.
    #[arg(long, env = "TESTBED_TLS_CLIENT_KEY", requires = "tls_client_cert", value_parser = read_pem)]
    pub tls_client_key: Option<PemFile>,

    /// The name the server's certificate is checked against, instead of
    /// the target's host (e.g. a Service's DNS name when the target is an
    /// address).
    #[arg(long, env = "TESTBED_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

impl ClientTlsArgs {
    /// The TLS settings the flags describe; none without `--tls-ca` and a
    /// client certificate (plain `http://` then, and `https://` refused).
    pub fn client_tls(&self) -> Option<ClientTls> {
        if self.tls_ca.is_none() && self.tls_client_cert.is_none() {
            return None;
        }
        let mut tls = ClientTls::default();
        if let Some(ca) = &self.tls_ca {
            tls = tls.with_ca(&ca.pem);
        }
        if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
            tls = tls.with_identity(&cert.pem, &key.pem);
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.with_server_name(name.clone());
        }
        Some(tls)
    }
}

impl ClientTlsArgs {
    /// The same flags with every file read again; an error names the file.
    fn reread(&self) -> Result<Self, String> {
        let again = |file: &Option<PemFile>| {
            file.as_ref()
                .map(|f| read_pem(&f.path.to_string_lossy()))
                .transpose()
        };
        Ok(Self {
            tls_ca: again(&self.tls_ca)?,
            tls_client_cert: again(&self.tls_client_cert)?,
            tls_client_key: again(&self.tls_client_key)?,
            tls_server_name: self.tls_server_name.clone(),
        })
    }
}

/// The client TLS flags of `sim --serve`, whose files are read again for
/// every run (see the module docs).
#[derive(Debug)]
pub struct ReloadingTls {
    /// The flags as last read without error.
    good: Mutex<ClientTlsArgs>,
}

impl ReloadingTls {
    /// Watches the files of `args`; `None` when the flags ask for no TLS.
    pub fn new(args: &ClientTlsArgs) -> Option<Self> {
        args.client_tls()?;
        Some(Self {
            good: Mutex::new(args.clone()),
        })
    }

    /// The TLS settings from the files as they are now, or, when one cannot
    /// be read (a rotation half-written, a Secret remounting), from the
    /// last good read, with a warning.
    pub fn current(&self) -> ClientTls {
        let mut good = self.good.lock().unwrap_or_else(PoisonError::into_inner);
        match good.reread() {
            Ok(fresh) => *good = fresh,
            Err(err) => tracing::warn!(
                error = %err,
                "client TLS files unreadable: this run uses the last good ones"
            ),
        }
        // Some: `new` checked the flags ask for TLS, and a reread keeps
        // which files are given.
        good.client_tls().unwrap_or_default()
    }

    /// The flags as last read without error (for tests).
    #[cfg(test)]
    fn last_good(&self) -> ClientTlsArgs {
        self.good
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

pub use testbed_client::ClientTls;

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        tls: ClientTlsArgs,
    }

    /// No flag, no TLS; an unreadable or non-PEM file is a parse error
    /// naming it; a client key needs its certificate.
    #[test]
    fn flags_are_checked_when_parsed() {
        assert!(
            Cli::try_parse_from(["x"])
                .unwrap()
                .tls
                .client_tls()
                .is_none()
        );
        let err = Cli::try_parse_from(["x", "--tls-ca", "/nonexistent/ca.pem"]).unwrap_err();
        assert!(
            err.to_string().contains("cannot read /nonexistent/ca.pem"),
            "{err}"
        );
        let path = std::env::temp_dir().join(format!("sim-tls-{}.pem", std::process::id()));
        std::fs::write(&path, "not pem").unwrap();
        let err = Cli::try_parse_from(["x", "--tls-ca", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("holds no PEM block"), "{err}");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from(["x", "--tls-ca", path.to_str().unwrap()]).unwrap();
        assert!(cli.tls.client_tls().is_some_and(|t| t.trusts()));
        let err =
            Cli::try_parse_from(["x", "--tls-client-key", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("--tls-client-cert"), "{err}");
        let _ = std::fs::remove_file(path);
    }

    /// A rewritten file is read again at the next run; one that is gone
    /// or no longer PEM leaves the last good contents in use.
    #[test]
    fn served_runs_read_the_files_again() {
        let path = std::env::temp_dir().join(format!("sim-tls-reload-{}.pem", std::process::id()));
        let first = "-----BEGIN CERTIFICATE-----\nAQ==\n-----END CERTIFICATE-----\n";
        let second = "-----BEGIN CERTIFICATE-----\nAg==\n-----END CERTIFICATE-----\n";
        std::fs::write(&path, first).unwrap();
        let cli = Cli::try_parse_from(["x", "--tls-ca", path.to_str().unwrap()]).unwrap();
        let tls = ReloadingTls::new(&cli.tls).unwrap();
        let ca = |tls: &ReloadingTls| tls.last_good().tls_ca.unwrap().pem;

        std::fs::write(&path, second).unwrap();
        assert!(tls.current().trusts());
        assert_eq!(ca(&tls), second.as_bytes());

        std::fs::write(&path, "half-written").unwrap();
        assert!(tls.current().trusts());
        assert_eq!(ca(&tls), second.as_bytes());
        std::fs::remove_file(&path).unwrap();
        assert!(tls.current().trusts());
        assert_eq!(ca(&tls), second.as_bytes());

        assert!(ReloadingTls::new(&Cli::try_parse_from(["x"]).unwrap().tls).is_none());
    }
}
