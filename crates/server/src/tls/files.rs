//! The TLS files: read, parsed and checked into a rustls `ServerConfig`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Why the TLS files could not be used; each message is one line naming
/// the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        /// The flag naming the file.
        flag: &'static str,
        /// The file.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file holds nothing usable of what its flag needs.
    #[error("{flag} {path}: {reason}")]
    Content {
        /// The flag naming the file.
        flag: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("--tls-key {key} does not match --tls-cert {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls' reason.
        reason: String,
    },
}

/// Where the TLS files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--tls-cert`.
    pub cert: PathBuf,
    /// `--tls-key`.
    pub key: PathBuf,
    /// `--tls-client-ca`: mTLS when set.
    pub client_ca: Option<PathBuf>,
}

/// The bytes of the TLS files at one moment, compared to notice a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.display().to_string(),
        source,
    })
}

fn content(flag: &'static str, path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Content {
        flag,
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn certificates(
    flag: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(flag, path, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(content(flag, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

impl TlsFiles {
    /// Reads every file.
    pub fn read(&self) -> Result<Contents, TlsError> {
        Ok(Contents {
            cert: read("--tls-cert", &self.cert)?,
            key: read("--tls-key", &self.key)?,
            client_ca: self
                .client_ca
                .as_deref()
                .map(|path| read("--tls-client-ca", path))
                .transpose()?,
        })
    }

    /// A server configuration from `contents`: the certificate and its key
    /// (checked to match), client certificates required and verified
    /// against the client CA when there is one, ALPN `h2` only.
    pub fn build(&self, contents: &Contents) -> Result<rustls::ServerConfig, TlsError> {
        let provider = super::provider();
        let chain = certificates("--tls-cert", &self.cert, &contents.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&contents.key)
            .map_err(|e| content("--tls-key", &self.key, format!("no PEM private key: {e}")))?;
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| content("--tls-cert", &self.cert, e.to_string()))?;
        let builder = match (&self.client_ca, &contents.client_ca) {
            (Some(path), Some(pem)) => {
                let mut roots = RootCertStore::empty();
                for ca in certificates("--tls-client-ca", path, pem)? {
                    roots.add(ca).map_err(|e| {
                        content(
                            "--tls-client-ca",
                            path,
                            format!("not a CA certificate: {e}"),
                        )
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| content("--tls-client-ca", path, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                cert: self.cert.display().to_string(),
                key: self.key.display().to_string(),
                reason: e.to_string(),
            },
            other => content("--tls-key", &self.key, other.to_string()),
        })?;
        // gRPC is HTTP/2 only; a client offering only http/1.1 is refused
        // in the handshake rather than after it.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("testbed-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    /// A certificate with its own key builds a configuration offering h2.
    #[test]
    fn builds_with_alpn_h2() {
        let dir = dir("ok");
        let (cert, key) = self_signed();
        let files = TlsFiles {
            cert: write(&dir, "c.pem", &cert),
            key: write(&dir, "k.pem", &key),
            client_ca: Some(write(&dir, "ca.pem", &cert)),
        };
        let config = files.build(&files.read().unwrap()).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }

    /// Another certificate's key is refused with one line naming both files.
    #[test]
    fn mismatched_key_names_both_files() {
        let dir = dir("mismatch");
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let files = TlsFiles {
            cert: write(&dir, "c.pem", &cert),
            key: write(&dir, "k.pem", &other_key),
            client_ca: None,
        };
        let err = files.build(&files.read().unwrap()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "--tls-key {} does not match --tls-cert {}: ",
                files.key.display(),
                files.cert.display()
            )),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    /// A missing file and a file without a certificate name their flag.
    #[test]
    fn unreadable_and_empty_files_name_the_flag() {
        let dir = dir("missing");
        let (_, key) = self_signed();
        let files = TlsFiles {
            cert: dir.join("absent.pem"),
            key: write(&dir, "k.pem", &key),
            client_ca: None,
        };
        let err = files.read().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "cannot read --tls-cert {}: ",
                files.cert.display()
            )),
            "{err}"
        );
        let files = TlsFiles {
            cert: write(&dir, "garbage.pem", "not a certificate\n"),
            ..files
        };
        let err = files.build(&files.read().unwrap()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "--tls-cert {}: holds no PEM certificate",
                files.cert.display()
            )
        );
    }
}
