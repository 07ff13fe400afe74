//! Finding a route's token in a request, sans-IO: `Authorization: Bearer`, a cookie, a query parameter, or a
//! `Sec-WebSocket-Protocol` entry.
//!
//! The subprotocol convention: browsers cannot set headers on a WebSocket, but they can offer subprotocols, so the
//! token travels as an entry `bearer.<JWT>` (the prefix is configurable: `subprotocol:PREFIX`; Kubernetes does the
//! same with `base64url.bearer.authorization.k8s.io.<token>`). A JWT is base64url parts joined by dots, all valid
//! token characters, so it needs no further encoding. Every entry with the prefix is removed from the list the
//! upstream sees (whichever source provided the token), so it can never be chosen and echoed in the `101`. A browser
//! fails a handshake whose answer names no subprotocol when it offered some, so a client offers a real protocol
//! next to the token entry: `new WebSocket(url, ["chat.v1", "bearer." + jwt])`.
//!
//! Owns: the extraction rules. Does not own: what a token means (`super`).

use ringway_config::auth::TokenSource;

use crate::http::head::{Headers, RequestHead};

/// What the sources found in a request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Found {
    /// The token of the first source holding one.
    pub(crate) token: Option<String>,
    /// `Some`: the route looks for tokens in subprotocols and the request offered entries with the prefix; these
    /// are the entries left for the upstream (empty: send none).
    pub(crate) subprotocols_left: Option<Vec<String>>,
}

/// Looks for a token in `sources`, in order. `target` is the request target in origin form (`/path?query`).
pub(crate) fn find(sources: &[TokenSource], head: &RequestHead, target: &str) -> Found {
    let mut found = Found::default();
    for source in sources {
        let token = match source {
            TokenSource::Header => bearer(head),
            TokenSource::Cookie(name) => cookie(head, name),
            TokenSource::Query(name) => query(target, name),
            TokenSource::Subprotocol(prefix) => {
                let (token, left) = subprotocol(head, prefix);
                if left.is_some() {
                    found.subprotocols_left = left;
                }
                token
            }
        };
        if found.token.is_none() {
            found.token = token.filter(|t| !t.is_empty());
        }
    }
    found
}

/// `Authorization: Bearer TOKEN` (the scheme is case-insensitive, RFC 6750 §2.1).
fn bearer(head: &RequestHead) -> Option<String> {
    let value = head.header_str("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The value of cookie `name` from any `Cookie` header (`a=1; b=2`).
fn cookie(head: &RequestHead, name: &str) -> Option<String> {
    head.headers_named("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n.trim() == name).then(|| v.trim().trim_matches('"').to_owned())
        })
}

/// The value of query parameter `name` in `target`, percent-decoded.
fn query(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        (n == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The token from the first entry with `prefix`, and the list without such entries (`None`: there were none).
fn subprotocol(head: &RequestHead, prefix: &str) -> (Option<String>, Option<Vec<String>>) {
    let offered: Vec<&str> = head
        .headers_named("sec-websocket-protocol")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    let mut token = None;
    let mut left = Vec::with_capacity(offered.len());
    let mut removed = false;
    for entry in offered {
        match entry.strip_prefix(prefix) {
            Some(t) => {
                removed = true;
                token.get_or_insert_with(|| t.to_owned());
            }
            None => left.push(entry.to_owned()),
        }
    }
    (token, removed.then_some(left))
}

/// Replaces the request's `Sec-WebSocket-Protocol` headers with `left` (none when empty).
pub(crate) fn set_subprotocols(head: &mut RequestHead, left: &[String]) {
    head.headers
        .retain(|h| !h.name.eq_ignore_ascii_case("sec-websocket-protocol"));
    if !left.is_empty() {
        head.headers.push(crate::http::head::Header {
            name: "Sec-WebSocket-Protocol".to_owned(),
            value: left.join(", ").into_bytes(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::testing;

    fn head(extra: &str) -> RequestHead {
        testing::request(format!("GET /ws?x=1 HTTP/1.1\r\nHost: h\r\n{extra}\r\n"))
    }

    fn sources(list: &[&str]) -> Vec<TokenSource> {
        list.iter()
            .map(|s| match s.split_once(':') {
                None if *s == "header" => TokenSource::Header,
                None => TokenSource::Subprotocol("bearer.".into()),
                Some(("cookie", n)) => TokenSource::Cookie(n.into()),
                Some(("query", n)) => TokenSource::Query(n.into()),
                Some((_, p)) => TokenSource::Subprotocol(p.into()),
            })
            .collect()
    }

    #[test]
    fn bearer_header_scheme_is_case_insensitive() {
        let h = head("Authorization: bearer abc.def.ghi\r\n");
        assert_eq!(
            find(&sources(&["header"]), &h, "/").token.as_deref(),
            Some("abc.def.ghi")
        );
        let h = head("Authorization: Basic dXNlcjpwYXNz\r\n");
        assert_eq!(find(&sources(&["header"]), &h, "/").token, None);
    }

    #[test]
    fn cookie_and_query_sources() {
        let h = head("Cookie: a=1; jwt=tok.en.x; b=2\r\n");
        assert_eq!(
            find(&sources(&["cookie:jwt"]), &h, "/").token.as_deref(),
            Some("tok.en.x")
        );
        assert_eq!(find(&sources(&["cookie:nope"]), &h, "/").token, None);
        let found = find(
            &sources(&["query:access_token"]),
            &h,
            "/ws?a=1&access_token=t%2Ek.x",
        );
        assert_eq!(found.token.as_deref(), Some("t.k.x"));
    }

    #[test]
    fn first_source_with_a_token_wins() {
        let h = head("Authorization: Bearer from-header\r\nCookie: jwt=from-cookie\r\n");
        let s = sources(&["cookie:jwt", "header"]);
        assert_eq!(find(&s, &h, "/").token.as_deref(), Some("from-cookie"));
        let s = sources(&["cookie:other", "header"]);
        assert_eq!(find(&s, &h, "/").token.as_deref(), Some("from-header"));
    }

    #[test]
    fn subprotocol_entries_with_the_prefix_are_removed() {
        let h = head(
            "Sec-WebSocket-Protocol: chat, bearer.a.b.c\r\nSec-WebSocket-Protocol: bearer.x.y.z, v2\r\n",
        );
        let found = find(&sources(&["subprotocol"]), &h, "/");
        assert_eq!(found.token.as_deref(), Some("a.b.c"));
        assert_eq!(
            found.subprotocols_left,
            Some(vec!["chat".to_owned(), "v2".to_owned()])
        );
        // Removed even when another source provided the token.
        let h2 = head("Authorization: Bearer t\r\nSec-WebSocket-Protocol: bearer.q, chat\r\n");
        let found = find(&sources(&["header", "subprotocol"]), &h2, "/");
        assert_eq!(found.token.as_deref(), Some("t"));
        assert_eq!(found.subprotocols_left, Some(vec!["chat".to_owned()]));
        let mut h = h;
        set_subprotocols(&mut h, &["chat".to_owned()]);
        assert_eq!(h.headers_named("sec-websocket-protocol").count(), 1);
        assert_eq!(h.header_str("sec-websocket-protocol"), Some("chat"));
        set_subprotocols(&mut h, &[]);
        assert_eq!(h.header("sec-websocket-protocol"), None);
    }

    #[test]
    fn custom_prefix_and_no_entries() {
        let h = head("Sec-WebSocket-Protocol: chat\r\n");
        let found = find(&sources(&["subprotocol"]), &h, "/");
        assert_eq!(found, Found::default());
        let h = head("Sec-WebSocket-Protocol: jwt-t.o.k\r\n");
        let found = find(&sources(&["subprotocol:jwt-"]), &h, "/");
        assert_eq!(found.token.as_deref(), Some("t.o.k"));
        assert_eq!(found.subprotocols_left, Some(vec![]));
    }
}
