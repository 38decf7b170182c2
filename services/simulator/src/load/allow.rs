//! The targets a served run may send load to: the allow-list of
//! `testbed sim --serve` (`--allow-target`, plus the configured
//! `--target` and `--query-target`).
//!
//! A target passes in two steps, both on StartRun and on UpdateRun:
//!
//! 1. **By name.** A target whose host is a name on the list (exact,
//!    case-insensitive, and its port allowed) passes: a listed name vouches
//!    for whatever it resolves to, as the configured `dns:///` Service
//!    names must (their pods come and go).
//! 2. **By address.** Any other target is resolved (`lookup_host`) and
//!    passes only if *every* address it resolves to is allowed: inside a
//!    listed address or CIDR, or one of the addresses a listed name
//!    resolves to now, each with its port allowed. So a name nobody listed
//!    that points at another team's service is refused, and so is a literal
//!    address that is not listed.
//!
//! A `dns:///` target is re-resolved every 10 s while its run lasts; one
//! that passed by address keeps being checked there
//! ([`crate::load::transport::guarded_channels`]): a new address that is
//! not allowed gets no connection. A name on the list is trusted for as
//! long as the run lasts. What it does not do: follow an `http://NAME`
//! target between the check and the connection (tonic resolves it again
//! when it connects). The NetworkPolicy of the deployment bounds the
//! egress beyond that.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// One entry of the allow-list: a host (a DNS name, or an address or CIDR)
/// and a port, or any port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    host: Host,
    /// `None` = any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// A DNS name, lower-cased.
    Name(String),
    /// An address block: `addr/prefix` (a single address is /32 or /128).
    Net { addr: IpAddr, prefix: u8 },
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            Host::Name(name) => name.clone(),
            Host::Net { addr, prefix } if *prefix == full_prefix(*addr) => match addr {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            },
            Host::Net { addr, prefix } => match addr {
                IpAddr::V6(v6) => format!("[{v6}/{prefix}]"),
                IpAddr::V4(v4) => format!("{v4}/{prefix}"),
            },
        };
        match self.port {
            Some(port) => write!(f, "{host}:{port}"),
            None => write!(f, "{host}"),
        }
    }
}

fn full_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// An address or CIDR: `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
fn parse_net(value: &str) -> Option<Host> {
    let (addr, prefix) = match value.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (value, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let prefix = match prefix {
        None => full_prefix(addr),
        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= full_prefix(addr))?,
    };
    Some(Host::Net { addr, prefix })
}

/// A DNS name: labels of letters, digits, `-` and `_`, dot-separated.
fn parse_name(value: &str) -> Option<Host> {
    let name = value.strip_suffix('.').unwrap_or(value);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    ok.then(|| Host::Name(name.to_ascii_lowercase()))
}

impl FromStr for AllowEntry {
    type Err = String;

    /// `HOST`, `HOST:PORT` or `HOST:*`, where HOST is a DNS name, an
    /// IPv4 address or CIDR, or an IPv6 one in brackets (`[fd00::/8]:50051`;
    /// brackets may be left out without a port).
    fn from_str(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let bad = || {
            format!(
                "{value:?}: expected HOST, HOST:PORT or HOST:*, HOST a DNS name, an address or a CIDR (IPv6 in brackets)"
            )
        };
        // A bare IPv6 address or block, no port.
        if value.matches(':').count() > 1 && !value.starts_with('[') {
            let host = parse_net(value).ok_or_else(bad)?;
            return Ok(Self { host, port: None });
        }
        let (host, port) = if let Some(rest) = value.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
            };
            (parse_net(inside).ok_or_else(bad)?, port)
        } else {
            let (host, port) = match value.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (value, None),
            };
            let host = parse_net(host)
                .or_else(|| parse_name(host))
                .ok_or_else(bad)?;
            (host, port)
        };
        let port = match port {
            None | Some("*") => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| bad())?),
        };
        Ok(Self { host, port })
    }
}

impl AllowEntry {
    /// The entry of a configured target (`http(s)://HOST:PORT` or
    /// `dns:///NAME:PORT`): its host and port exactly.
    pub fn of_target(target: &str) -> Option<Self> {
        let (host, port) = host_port(target)?;
        let host = parse_net(&host).or_else(|| parse_name(&host))?;
        Some(Self {
            host,
            port: Some(port),
        })
    }

    fn port_ok(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    fn contains(&self, addr: SocketAddr) -> bool {
        let Host::Net { addr: net, prefix } = &self.host else {
            return false;
        };
        self.port_ok(addr.port()) && in_net(addr.ip(), *net, *prefix)
    }
}

/// Whether `ip` is inside `net/prefix` (an IPv4-mapped IPv6 address counts
/// as its IPv4 address).
fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let ip = ip.to_canonical();
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// The host (brackets removed) and port of a target: `dns:///NAME:PORT`,
/// or `http(s)://HOST[:PORT]` (ports 80 and 443 by default).
pub fn host_port(target: &str) -> Option<(String, u16)> {
    if let Some(name) = target.strip_prefix("dns:///") {
        let (host, port) = name.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        return Some((host.to_owned(), port.parse().ok()?));
    }
    let uri: tonic::transport::Uri = target.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().or(match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    })?;
    Some((host.to_owned(), port))
}

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its host:port is on no entry and is an address, not a name.
    NotListed,
    /// It resolves to this address, which is not allowed.
    Resolved(SocketAddr),
    /// Its name did not resolve (so its addresses cannot be checked).
    Unresolved(String),
}

/// A checked target: the addresses it resolved to (empty when it passed by
/// name and was not resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// Every address of the target, when it was resolved.
    pub addresses: Vec<SocketAddr>,
}

/// The allow-list of a simulator server.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    entries: Vec<AllowEntry>,
}

impl AllowList {
    /// The configured targets' host:port (`--target`, `--query-target`),
    /// and `extra` (`--allow-target`).
    pub fn new<'a>(
        targets: impl IntoIterator<Item = &'a str>,
        extra: impl IntoIterator<Item = AllowEntry>,
    ) -> Self {
        let mut entries: Vec<AllowEntry> = targets
            .into_iter()
            .filter_map(AllowEntry::of_target)
            .collect();
        entries.extend(extra);
        entries.dedup();
        Self { entries }
    }

    /// The entries, as `--allow-target` would spell them (for the log).
    pub fn describe(&self) -> Vec<String> {
        self.entries.iter().map(ToString::to_string).collect()
    }

    /// Checks `target` (already in a valid form: `transport::parse_target`).
    pub async fn check(&self, target: &str) -> Result<Allowed, Refusal> {
        let (host, port) = host_port(target).ok_or(Refusal::NotListed)?;
        let literal: Option<IpAddr> = host.parse().ok();
        let lower = host.to_ascii_lowercase();
        let by_name = literal.is_none()
            && self.entries.iter().any(|e| {
                matches!(&e.host, Host::Name(n) if *n == lower.trim_end_matches('.'))
                    && e.port_ok(port)
            });
        if by_name {
            return Ok(Allowed {
                addresses: Vec::new(),
            });
        }
        let addresses: Vec<SocketAddr> = match literal {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| Refusal::Unresolved(e.to_string()))?
                .collect(),
        };
        if addresses.is_empty() {
            return Err(Refusal::Unresolved("no addresses".to_owned()));
        }
        let named = self.named_addresses().await;
        for addr in &addresses {
            let listed = self.entries.iter().any(|e| e.contains(*addr));
            let ip = addr.ip().to_canonical();
            let vouched = named.contains(&(ip, Some(addr.port()))) || named.contains(&(ip, None));
            if !(listed || vouched) {
                return Err(if literal.is_some() {
                    Refusal::NotListed
                } else {
                    Refusal::Resolved(*addr)
                });
            }
        }
        Ok(Allowed { addresses })
    }

    /// What the listed names resolve to now, each with the port its entry
    /// allows (`None`: any).
    async fn named_addresses(&self) -> HashSet<(IpAddr, Option<u16>)> {
        let mut out = HashSet::new();
        for entry in &self.entries {
            let Host::Name(name) = &entry.host else {
                continue;
            };
            match tokio::net::lookup_host((name.as_str(), entry.port.unwrap_or(0))).await {
                Ok(addrs) => out.extend(addrs.map(|a| (a.ip().to_canonical(), entry.port))),
                Err(err) => {
                    tracing::debug!(name, error = %err, "an allowed name did not resolve");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: &str) -> AllowEntry {
        s.parse().unwrap()
    }

    /// Every documented form parses and prints back; malformed ones are refused.
    #[test]
    fn entries_parse() {
        for (input, shown) in [
            ("ingest:50051", "ingest:50051"),
            ("Ingest.Testbed.svc", "ingest.testbed.svc"),
            ("ingest:*", "ingest"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.0.0.0/8:50051", "10.0.0.0/8:50051"),
            ("10.1.2.3", "10.1.2.3"),
            ("[::1]:50051", "[::1]:50051"),
            ("fd00::/8", "[fd00::/8]"),
            ("[fd00::/8]:1", "[fd00::/8]:1"),
        ] {
            assert_eq!(entry(input).to_string(), shown, "{input}");
        }
        for bad in [
            "",
            "a b",
            "10.0.0.0/33",
            "host:port",
            "[::1",
            "x:70000",
            "http://a:1",
        ] {
            assert!(bad.parse::<AllowEntry>().is_err(), "{bad}");
        }
    }

    /// Targets' host and port, with the schemes' default ports.
    #[test]
    fn targets_host_and_port() {
        assert_eq!(host_port("http://a:1"), Some(("a".into(), 1)));
        assert_eq!(host_port("https://a"), Some(("a".into(), 443)));
        assert_eq!(host_port("http://[::1]:5"), Some(("::1".into(), 5)));
        assert_eq!(
            host_port("dns:///svc.ns:50051"),
            Some(("svc.ns".into(), 50051))
        );
    }

    /// Addresses are checked against blocks and ports.
    #[tokio::test]
    async fn addresses_need_an_entry() {
        let list = AllowList::new(
            ["http://127.0.0.1:50051"],
            [entry("10.0.0.0/8:9000"), entry("[fd00::/8]")],
        );
        for ok in [
            "http://127.0.0.1:50051",
            "http://10.200.0.1:9000",
            "http://[fd00::5]:1",
        ] {
            assert!(list.check(ok).await.is_ok(), "{ok}");
        }
        for refused in [
            "http://127.0.0.1:50052",
            "http://10.0.0.1:9001",
            "http://11.0.0.1:9000",
        ] {
            assert_eq!(
                list.check(refused).await,
                Err(Refusal::NotListed),
                "{refused}"
            );
        }
    }

    /// A listed name passes by name; an unlisted one only if every address
    /// it resolves to is allowed.
    #[tokio::test]
    async fn names_pass_by_name_or_by_every_address() {
        let list = AllowList::new(["dns:///localhost:7000"], [entry("ingest.svc:1")]);
        assert!(list.check("http://ingest.svc:1").await.is_ok());
        assert!(list.check("dns:///LOCALHOST:7000").await.is_ok());
        // localhost on another port: resolved, and its address refused.
        match list.check("http://localhost:7001").await {
            Err(Refusal::Resolved(addr)) => assert_eq!(addr.port(), 7001),
            other => panic!("{other:?}"),
        }
        // An address localhost resolves to is vouched for by the name.
        let local = tokio::net::lookup_host(("localhost", 7000)).await.unwrap();
        for addr in local {
            let target = format!("http://{addr}");
            assert!(list.check(&target).await.is_ok(), "{target}");
        }
    }
}
