//! [`ClientTls`]: how a channel speaks TLS to an `https://` target (and,
//! given a CA, to the addresses of a `dns:///` one): the CA the servers'
//! certificates must chain to, an optional client certificate (servers
//! started with `--tls-client-ca` require one), and an optional name to
//! verify instead of the target's host. The simulator's `--tls-*` flags
//! build this same type.
//!
//! tonic's `ClientTlsConfig` (rustls with ring, the one provider in the
//! workspace) does the work. No system roots are loaded: a testbed's
//! certificates come from the cluster's own CA, so an `https://` target
//! needs [`ClientTls::with_ca`].

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Client TLS settings: the trusted CA, the client certificate, the name
/// to verify.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    ca: Option<Certificate>,
    identity: Option<Identity>,
    server_name: Option<String>,
}

impl ClientTls {
    /// Trusts the PEM CA certificate(s) `pem`.
    #[must_use]
    pub fn with_ca(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.ca = Some(Certificate::from_pem(pem));
        self
    }

    /// Presents the PEM certificate `cert` with its key `key` (mutual TLS).
    #[must_use]
    pub fn with_identity(mut self, cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Self {
        self.identity = Some(Identity::from_pem(cert, key));
        self
    }

    /// Verifies the servers' certificates as `name` instead of the
    /// target's host (e.g. a Service's DNS name when the target is an
    /// address).
    #[must_use]
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Whether servers can be verified (a CA was given).
    pub fn trusts(&self) -> bool {
        self.ca.is_some()
    }

    /// tonic's configuration for one endpoint; `host` is the name to
    /// verify unless [`ClientTls::with_server_name`] overrides it (none:
    /// the URI's host).
    pub fn config(&self, host: Option<&str>) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(ca.clone());
        }
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        if let Some(name) = self.server_name.as_deref().or(host) {
            config = config.domain_name(name);
        }
        config
    }
}
