//! The path a request is routed on, sans-IO: one reading of a request path that every upstream agrees with, so an
//! encoding trick cannot pick another route than the path the upstream ends up serving.
//!
//! Owns: [`routing_path`], the policy below. Does not own: the target forms and `Host` (see `rewrite`), route
//! matching itself (`ringway_config::RouteTable`).
//!
//! Policy. The upstream always receives the target exactly as the client sent it (RFC 9110 §7.6 lets a proxy not
//! rewrite it), so the route must be the one any reasonable decoding of that target leads to:
//! - Equivalent spellings are routed alike: percent-encoded unreserved characters are decoded (`/%61dmin` is
//!   `/admin`, RFC 3986 §6.2.2.2) and runs of `/` count as one (`//admin`), as servers that merge slashes see it.
//! - Spellings servers disagree on are refused with 400: dot segments (`/a/../admin`, `/%2e%2e/`, `/..;/`; clients
//!   remove them before sending, RFC 3986 §5.2.4, so one in a request is crafted), encoded `/` or `\` (`%2F`,
//!   `%5C`, which some servers decode and others do not), a literal `\`, encoded control characters (`%00`, `%0D`,
//!   `%0A`), and a `%` not followed by two hex digits.
//!
//! Route prefixes are matched against the result as they are written in the route file.

use std::borrow::Cow;

/// Why a path is refused (the client gets 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PathError {
    #[error("dot segment in the path")]
    DotSegment,
    #[error("encoded or literal path separator (%2F, %5C or \\)")]
    Separator,
    #[error("encoded control character in the path")]
    Control,
    #[error("malformed percent-encoding in the path")]
    BadEncoding,
}

/// The path `target` (origin form, `/path?query`) is routed on, or why it is refused. Borrowed when the path needs no
/// normalizing (the usual case); the query is not part of it.
pub(crate) fn routing_path(target: &str) -> Result<Cow<'_, str>, PathError> {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let bytes = path.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (byte, len) = match b {
            b'\\' => return Err(PathError::Separator),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
                let (Some(hi), Some(lo)) = (hex_digit(hex[0]), hex_digit(hex[1])) else {
                    return Err(PathError::BadEncoding);
                };
                (hi << 4 | lo, 3)
            }
            _ => (b, 1),
        };
        if len == 3 {
            match byte {
                b'/' | b'\\' => return Err(PathError::Separator),
                0x00..=0x1f | 0x7f => return Err(PathError::Control),
                _ => {}
            }
        }
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
        let merged_slash = b == b'/' && i > 0 && bytes[i - 1] == b'/';
        let changes = merged_slash || (len == 3 && unreserved);
        if changes && out.is_none() {
            out = Some(bytes[..i].to_vec());
        }
        if let Some(out) = out.as_mut() {
            if merged_slash {
                // Dropped: runs of `/` route as one.
            } else if len == 3 && !unreserved {
                out.extend_from_slice(&bytes[i..i + 3]);
            } else {
                out.push(byte);
            }
        }
        i += len;
    }
    let normalized = match out {
        // Only ASCII was decoded into a valid UTF-8 path, so this cannot fail; refuse rather than panic.
        Some(v) => Cow::Owned(String::from_utf8(v).map_err(|_| PathError::BadEncoding)?),
        None => Cow::Borrowed(path),
    };
    if normalized.split('/').any(is_dot_segment) {
        return Err(PathError::DotSegment);
    }
    Ok(normalized)
}

/// `.` or `..`, also with path parameters (`..;x`), which some servers strip before resolving.
fn is_dot_segment(segment: &str) -> bool {
    let name = segment.split(';').next().unwrap_or(segment);
    name == "." || name == ".."
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_borrowed_as_they_are() {
        for p in ["/", "/admin", "/a/b.c/d..e/.f", "/a%20b", "/chat?x=/../y"] {
            let got = routing_path(p).unwrap();
            assert!(matches!(got, Cow::Borrowed(_)), "{p}");
            assert_eq!(got, p.split('?').next().unwrap());
        }
    }

    #[test]
    fn equivalent_spellings_route_alike() {
        for (p, want) in [
            ("/%61dmin", "/admin"),
            ("/%41%44MIN/x", "/ADMIN/x"),
            ("//admin", "/admin"),
            ("/api///v1//x", "/api/v1/x"),
            ("/%7Euser/%2d", "/~user/-"),
            ("/%61%20b?q=%2e%2e", "/a%20b"),
        ] {
            assert_eq!(routing_path(p).unwrap(), want, "{p}");
        }
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (p, want) in [
            ("/public/../admin", PathError::DotSegment),
            ("/./admin", PathError::DotSegment),
            ("/admin/..", PathError::DotSegment),
            ("/%2e%2e/admin", PathError::DotSegment),
            ("/public/%2E./admin", PathError::DotSegment),
            ("/public/..;/admin", PathError::DotSegment),
            ("/public%2F..%2Fadmin", PathError::Separator),
            ("/public%2fadmin", PathError::Separator),
            ("/public%5cadmin", PathError::Separator),
            ("/public\\admin", PathError::Separator),
            ("/admin%00", PathError::Control),
            ("/a%0d%0aX-Injected:%201", PathError::Control),
            ("/a%zz", PathError::BadEncoding),
            ("/a%4", PathError::BadEncoding),
        ] {
            assert_eq!(routing_path(p), Err(want), "{p}");
        }
    }
}
