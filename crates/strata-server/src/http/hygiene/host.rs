//! The `Host` check of a server in the clear (DNS rebinding).
//!
//! A page on `attacker.example` can make the browser resolve that name to 127.0.0.1 and
//! call the local server as same-origin; the request still says
//! `Host: attacker.example`. Only names that must mean this machine, or that the
//! operator listed, are answered.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::header;

use crate::http::error::ApiError;

/// The host names answered besides loopback addresses and `localhost`.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts {
    /// Lowercase, without a trailing dot.
    names: Vec<String>,
}

impl AllowedHosts {
    /// `names` as given (`--allowed-host`); case and a trailing dot do not matter.
    pub fn new(names: &[String]) -> AllowedHosts {
        AllowedHosts {
            names: names.iter().map(|n| normalise(n)).collect(),
        }
    }

    /// `Err` when the request names a host that is not allowed. A request with no host
    /// at all (HTTP/1.0) passes: browsers always send one.
    pub fn check(&self, request: &Request) -> Result<(), ApiError> {
        // HTTP/2 carries the host in `:authority`, which hyper puts in the URI.
        let host = match request.headers().get(header::HOST) {
            Some(value) => value.to_str().ok().map(str::to_owned),
            None => match request.uri().authority() {
                Some(authority) => Some(authority.as_str().to_owned()),
                None => return Ok(()),
            },
        };
        match host {
            Some(host) if self.allows(&host) => Ok(()),
            host => Err(ApiError::HostNotAllowed {
                host: host.unwrap_or_else(|| "(not text)".to_owned()),
            }),
        }
    }

    /// Whether `host` (a `Host` header value, with or without a port) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        let name = normalise(strip_port(host));
        if name == "localhost" {
            return true;
        }
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            if ip.is_loopback() {
                return true;
            }
        }
        self.names.contains(&name)
    }
}

fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `host` without its `:port`: `[::1]:2114` → `[::1]`, `a:2114` → `a`, `::1` → `::1`.
fn strip_port(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    match host.rsplit_once(':') {
        // One colon: a port. More: a bare IPv6 address (not valid in Host, but harmless).
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::AllowedHosts;

    #[test]
    fn loopback_and_localhost_pass_other_names_only_when_listed() {
        let hosts = AllowedHosts::new(&["Strata.Internal.".to_owned()]);
        for ok in [
            "localhost",
            "LOCALHOST:2114",
            "127.0.0.1",
            "127.0.0.1:2114",
            "127.1.2.3:80",
            "[::1]:2114",
            "[::1]",
            "strata.internal",
            "strata.internal:2114",
        ] {
            assert!(hosts.allows(ok), "{ok} should be allowed");
        }
        for refused in [
            "attacker.example",
            "attacker.example:2114",
            "localhost.attacker.example",
            "10.0.0.5:2114",
            "[2001:db8::1]:2114",
            "0.0.0.0",
            "",
        ] {
            assert!(!hosts.allows(refused), "{refused} should be refused");
        }
    }
}
