//! Query-string redaction for log lines: values of the parameters the config names (`redact_query`: tokens,
//! keys, signatures) are written as `REDACTED`, so a log shipper never receives a credential from a URL.
//!
//! Owns: finding parameters in a request target, case-insensitively and percent-encoded names included. Does not
//! own: what is forwarded upstream (the target goes upstream unchanged).

use std::borrow::Cow;

/// `target` with the values of `params` (lowercase names) replaced by `REDACTED`; borrowed when nothing matched.
pub(crate) fn redact_query<'t>(target: &'t str, params: &[String]) -> Cow<'t, str> {
    let Some((path, query)) = target.split_once('?') else {
        return Cow::Borrowed(target);
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut changed = false;
    let mut out = String::with_capacity(target.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        if value.is_some() && is_redacted(name, params) {
            changed = true;
            out.push_str(name);
            out.push_str("=REDACTED");
        } else {
            out.push_str(pair);
        }
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(target)
    }
}

fn is_redacted(name: &str, params: &[String]) -> bool {
    let decoded = percent_decode_lower(name);
    params.contains(&decoded)
}

/// The name lowercased with `%XX` escapes and `+` decoded (so `%74oken` is `token`).
fn percent_decode_lower(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<String> {
        vec!["token".to_owned(), "api_key".to_owned()]
    }

    #[test]
    fn named_values_are_redacted_and_everything_else_kept() {
        assert_eq!(
            redact_query("/chat?room=1&token=abc.def&x", &params()),
            "/chat?room=1&token=REDACTED&x"
        );
        assert_eq!(
            redact_query("/a?TOKEN=1&Api_Key=2#frag", &params()),
            "/a?TOKEN=REDACTED&Api_Key=REDACTED#frag"
        );
        assert_eq!(
            redact_query("/a?%74oken=secret", &params()),
            "/a?%74oken=REDACTED"
        );
        assert!(matches!(
            redact_query("/a?room=1", &params()),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            redact_query("/plain", &params()),
            Cow::Borrowed(_)
        ));
        // A bare name has no value to hide; odd escapes never panic.
        assert_eq!(redact_query("/a?token&b=%", &params()), "/a?token&b=%");
        assert_eq!(
            redact_query("/a?%zz=1&%=2&%4=3", &params()),
            "/a?%zz=1&%=2&%4=3"
        );
    }
}
