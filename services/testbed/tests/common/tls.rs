//! Certificates made in the test (rcgen) and TLS clients for them.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[allow(unused_imports)] // Each test binary uses its own part of this harness.
pub use testbed_test_support::tls::{Ca, Files, Leaf};

/// A client's TLS settings: the CA it trusts, and its own certificate.
pub fn client_tls(ca: &str, identity: Option<&Leaf>) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    tls
}

/// A TLS channel to `addr`, connected now.
pub async fn connect(
    addr: SocketAddr,
    tls: ClientTlsConfig,
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

/// Health of `service` over a new TLS connection: the error says why the
/// connection or the call failed.
pub async fn health(
    addr: SocketAddr,
    tls: ClientTlsConfig,
    service: &str,
) -> Result<ServingStatus, String> {
    let channel = connect(addr, tls)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(|r| r.into_inner().status())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// Polls health over TLS until the overall status is SERVING (10 s at most).
pub async fn wait_serving(addr: SocketAddr, tls: &ClientTlsConfig) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = health(addr, tls.clone(), "").await;
        if status == Ok(ServingStatus::Serving) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not SERVING over TLS: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The DER certificate the server at `addr` presents, read with a bare
/// rustls client trusting `ca`; an error when the handshake fails.
pub async fn presented(addr: SocketAddr, ca: &str) -> Result<Vec<u8>, String> {
    handshake(addr, ca, None).await
}

/// One TLS connection to `addr` from a bare rustls client trusting `ca`
/// and presenting `identity`: the server's certificate once the server has
/// sent its first HTTP/2 bytes (so a refused client certificate, which TLS
/// 1.3 reports after the client's side is done, is an error too), or why
/// not. Exactly one connection, unlike a tonic channel that reconnects.
pub async fn handshake(
    addr: SocketAddr,
    ca: &str,
    identity: Option<&Leaf>,
) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::AsyncReadExt as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut first = [0u8; 9];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        other => return Err(format!("no HTTP/2 bytes from the server: {other:?}")),
    }
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .ok_or("no certificate")?;
    Ok(certs[0].to_vec())
}

/// The `/metrics` sample `name{labels}` whose labels contain `having`,
/// summed over series.
pub async fn metric(metrics: SocketAddr, name: &str, having: &str) -> f64 {
    let (_, body) = super::scrape(metrics, "text/plain").await;
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(having))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `metric` reaches `at_least` (10 s at most); returns it.
pub async fn wait_metric(metrics: SocketAddr, name: &str, having: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(metrics, name, having).await;
        if value >= at_least {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{{{having}}} = {value}, expected {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The path of `p` as a string, for command lines.
pub fn arg(p: &Path) -> String {
    p.display().to_string()
}
