//! The load target: a `ws://` or `wss://` URL split into what the connector needs (scheme, host for
//! SNI and the Host header, resolved socket address, request path). No I/O beyond name resolution.

use std::net::{SocketAddr, ToSocketAddrs};

/// A URL that cannot be used as a load target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target `{url}`: {reason}")]
pub struct TargetError {
    url: String,
    reason: String,
}

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `true` for `wss://`.
    pub tls: bool,
    /// Host as written in the URL (without brackets for IPv6), used for SNI.
    pub host: String,
    /// Port (default 80 / 443).
    pub port: u16,
    /// Request target: path and query, at least `/`.
    pub path: String,
    /// Value of the `Host` header.
    pub authority: String,
}

impl Target {
    /// Parses `ws[s]://host[:port][/path][?query]`.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let err = |reason: &str| TargetError {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else {
            return Err(err("scheme must be ws:// or wss://"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.is_empty() {
            return Err(err("missing host"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| err("unclosed `[` in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| err("invalid port"))?,
                None if after.is_empty() => default_port,
                None => return Err(err("junk after `]`")),
            };
            (host.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, p)) => (host.to_owned(), p.parse().map_err(|_| err("invalid port"))?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(err("missing host"));
        }
        Ok(Self {
            tls,
            host,
            port,
            path,
            authority: authority.to_owned(),
        })
    }

    /// Resolves the host to its first socket address.
    pub fn resolve(&self) -> Result<SocketAddr, TargetError> {
        let err = |reason: String| TargetError {
            url: self.authority.clone(),
            reason,
        };
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| err(format!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| err("host resolves to no address".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ws_and_wss_urls() {
        let t = Target::parse("ws://127.0.0.1:9000/echo?x=1").unwrap();
        assert!(!t.tls);
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 9000, "/echo?x=1")
        );
        let t = Target::parse("wss://example.test").unwrap();
        assert!(t.tls);
        assert_eq!(
            (t.port, t.path.as_str(), t.authority.as_str()),
            (443, "/", "example.test")
        );
        let t = Target::parse("ws://[::1]:81?q").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 81, "/?q")
        );
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(Target::parse("http://x/").is_err());
        assert!(Target::parse("ws://").is_err());
        assert!(Target::parse("ws://host:notaport/").is_err());
        assert!(Target::parse("ws://[::1/").is_err());
    }
}
