//! JWT authentication of a route's requests, sans-IO: given a request head and the time, say whether it may go on
//! and what the upstream is told.
//!
//! Owns: the verdict for one request ([`check`]): the token found by [`token`], its signature (the `jsonwebtoken`
//! crate on aws-lc-rs; no signature code here), `alg` against the route's list and the key's family (an HS256
//! token cannot be checked against an RSA key, `none` never parses), `kid` lookup in a key set, `exp`/`nbf` with
//! leeway against the caller's `now`, `iss`/`aud`; the status of a refusal (401 with `WWW-Authenticate` per
//! RFC 6750 for a missing, malformed, badly signed or expired token; 403 for a valid token whose issuer, audience
//! or claims do not fit); and the claim headers for the upstream.
//! Does not own: reading key files (`ringway_config::auth`, when the route file loads), answering the client,
//! logging, metrics (`crate::conn`), or closing an expired WebSocket (the relay, given [`Authorized::expires_at`]).

pub(crate) mod token;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use ringway_config::auth::{JwtAuth, JwtKey};
use serde_json::{Map, Value};

use crate::http::head::RequestHead;

/// A route's JWT policy, ready to check requests: the config's settings with one `Validation` per algorithm
/// (built once per config generation, not per request).
pub(crate) struct AuthPolicy {
    config: std::sync::Arc<JwtAuth>,
    validations: Vec<(Algorithm, Validation)>,
    /// Lowercased names of the claim headers (the client's copies are removed).
    header_names: Vec<String>,
}

/// A request that may go on.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Authorized {
    /// `(header name, value)` for the upstream, from `forward_claims`.
    pub(crate) headers: Vec<(String, String)>,
    /// Unix time after which the WebSocket is closed with 1008 (`exp` + leeway), when the route enforces expiry.
    pub(crate) expires_at: Option<u64>,
    /// `Some`: the request's `Sec-WebSocket-Protocol` list without the token entries (see [`token`]).
    pub(crate) subprotocols_left: Option<Vec<String>>,
}

/// A refused request: the status, and why (for the log and the answer's body; never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {reason}")]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) reason: String,
}

impl Refusal {
    fn unauthorized(reason: impl Into<String>) -> Self {
        Self {
            status: 401,
            reason: reason.into(),
        }
    }

    fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: 403,
            reason: reason.into(),
        }
    }

    /// Headers of the answer: RFC 6750 §3 `WWW-Authenticate` on a 401 (`invalid_token` once a token was sent).
    pub(crate) fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match (self.status, self.reason.as_str()) {
            (401, NO_TOKEN) => &[("www-authenticate", "Bearer")],
            (401, _) => &[("www-authenticate", "Bearer error=\"invalid_token\"")],
            _ => &[],
        }
    }
}

const NO_TOKEN: &str = "no bearer token";

impl AuthPolicy {
    pub(crate) fn new(config: std::sync::Arc<JwtAuth>) -> Self {
        let validations = config
            .algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                // `exp`/`nbf` are checked here against the caller's clock (sans-IO); the crate would read the
                // system clock.
                v.validate_exp = false;
                v.validate_nbf = false;
                v.leeway = 0;
                let mut required = vec!["exp"];
                if let Some(iss) = &config.issuer {
                    v.set_issuer(&[iss]);
                    required.push("iss");
                }
                match &config.audience {
                    Some(aud) => {
                        v.set_audience(&[aud]);
                        required.push("aud");
                    }
                    None => v.validate_aud = false,
                }
                v.set_required_spec_claims(&required);
                (*alg, v)
            })
            .collect();
        let header_names = config
            .forward_claims
            .iter()
            .map(|(_, h)| h.clone())
            .collect();
        Self {
            config,
            validations,
            header_names,
        }
    }

    /// The claim headers' names: the client's own copies are dropped on every request of the route.
    pub(crate) fn header_names(&self) -> &[String] {
        &self.header_names
    }
}

/// The wall clock as unix seconds: the `now` callers pass to [`check`].
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Decides whether `head` (with `target` its origin-form target) may go on at unix time `now`.
pub(crate) fn check(
    policy: &AuthPolicy,
    head: &RequestHead,
    target: &str,
    now: u64,
) -> Result<Authorized, Refusal> {
    let cfg = &policy.config;
    let found = token::find(&cfg.from, head, target);
    let token = found.token.ok_or_else(|| Refusal::unauthorized(NO_TOKEN))?;
    let header = jsonwebtoken::decode_header(&token)
        .map_err(|_| Refusal::unauthorized("malformed token"))?;
    let Some((_, validation)) = policy
        .validations
        .iter()
        .find(|(alg, _)| *alg == header.alg)
    else {
        return Err(Refusal::unauthorized(format!(
            "token algorithm {:?} not allowed",
            header.alg
        )));
    };
    let key = select_key(&cfg.keys.entries, header.alg, header.kid.as_deref())?;
    let data = jsonwebtoken::decode::<Map<String, Value>>(&token, &key.key, validation)
        .map_err(|e| refusal_for(e.kind()))?;
    let claims = data.claims;
    let leeway = cfg.leeway.as_secs();
    let exp =
        numeric_date(&claims, "exp")?.ok_or_else(|| Refusal::unauthorized("token has no exp"))?;
    if now > exp.saturating_add(leeway) {
        return Err(Refusal::unauthorized("token expired"));
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return Err(Refusal::unauthorized("token not yet valid (nbf)"));
    }
    let mut headers = Vec::with_capacity(cfg.forward_claims.len());
    for (claim, name) in &cfg.forward_claims {
        if let Some(value) = claims.get(claim) {
            let text = match value {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                Value::Array(items) if items.iter().all(Value::is_string) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            if text.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
                return Err(Refusal::forbidden(format!(
                    "claim `{claim}` cannot be sent as a header (control characters)"
                )));
            }
            headers.push((name.clone(), text));
        }
    }
    Ok(Authorized {
        headers,
        expires_at: cfg.enforce_expiry.then(|| exp.saturating_add(leeway)),
        subprotocols_left: found.subprotocols_left,
    })
}

/// The key for a token with `alg` and `kid`: the entry with that `kid`, or without a `kid` the only key of the
/// algorithm's family. A key of another family is never used (algorithm confusion).
fn select_key<'k>(
    keys: &'k [JwtKey],
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<&'k JwtKey, Refusal> {
    let fits = |k: &&JwtKey| k.key.family() == alg.family() && k.alg.is_none_or(|a| a == alg);
    let key = match kid {
        Some(kid) if keys.iter().any(|k| k.kid.is_some()) => keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .ok_or_else(|| Refusal::unauthorized("unknown kid"))?,
        _ => {
            let mut candidates = keys.iter().filter(fits);
            let first = candidates
                .next()
                .ok_or_else(|| Refusal::unauthorized("no key for the token's algorithm"))?;
            if candidates.next().is_some() {
                return Err(Refusal::unauthorized(
                    "token has no kid and several keys fit",
                ));
            }
            first
        }
    };
    if !fits(&key) {
        return Err(Refusal::unauthorized(
            "key does not fit the token's algorithm",
        ));
    }
    Ok(key)
}

/// A NumericDate claim (RFC 7519 §2: seconds, possibly fractional) as whole seconds; a non-number is malformed.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, Refusal> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| Refusal::unauthorized(format!("malformed {name} claim"))),
        Some(_) => Err(Refusal::unauthorized(format!("malformed {name} claim"))),
    }
}

/// A verification failure as a refusal: a token that does not fit the route's issuer or audience is 403, every
/// other failure 401.
fn refusal_for(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::InvalidIssuer => Refusal::forbidden("token issuer not accepted"),
        ErrorKind::InvalidAudience => Refusal::forbidden("token audience not accepted"),
        ErrorKind::InvalidSubject => Refusal::forbidden("token subject not accepted"),
        ErrorKind::MissingRequiredClaim(c) if c == "iss" || c == "aud" => {
            Refusal::forbidden(format!("token has no {c} claim"))
        }
        ErrorKind::MissingRequiredClaim(c) => {
            Refusal::unauthorized(format!("token has no {c} claim"))
        }
        ErrorKind::InvalidSignature => Refusal::unauthorized("bad token signature"),
        ErrorKind::InvalidAlgorithm => {
            Refusal::unauthorized("token algorithm does not fit the key")
        }
        ErrorKind::InvalidClaimFormat(c) => Refusal::unauthorized(format!("malformed {c} claim")),
        _ => Refusal::unauthorized("malformed token"),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Keys and tokens for tests: keys generated per run, tokens signed with `jsonwebtoken::encode`.
    #![allow(clippy::unwrap_used)]

    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header, encode};

    /// A generated signing key and the public half (PEM) or secret that verifies it.
    pub(crate) struct TestKey {
        pub(crate) alg: jsonwebtoken::Algorithm,
        pub(crate) encoding: EncodingKey,
        /// What a `key_file` holds: the public key PEM, or the secret.
        pub(crate) public: Vec<u8>,
    }

    impl TestKey {
        pub(crate) fn new(alg: jsonwebtoken::Algorithm) -> Self {
            use jsonwebtoken::Algorithm as A;
            let pair = |sig: &'static rcgen::SignatureAlgorithm| {
                rcgen::KeyPair::generate_for(sig).unwrap()
            };
            let (encoding, public) = match alg {
                A::HS256 | A::HS384 | A::HS512 => {
                    let secret =
                        b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                            .to_vec();
                    (EncodingKey::from_secret(&secret).unwrap(), secret)
                }
                A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512 => {
                    let kp = pair(&rcgen::PKCS_RSA_SHA256);
                    (
                        EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap(),
                        kp.public_key_pem().into_bytes(),
                    )
                }
                A::ES256 | A::ES384 => {
                    let sig = if alg == A::ES256 {
                        &rcgen::PKCS_ECDSA_P256_SHA256
                    } else {
                        &rcgen::PKCS_ECDSA_P384_SHA384
                    };
                    let kp = pair(sig);
                    (
                        EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
                        kp.public_key_pem().into_bytes(),
                    )
                }
                _ => {
                    let kp = pair(&rcgen::PKCS_ED25519);
                    (
                        EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap(),
                        kp.public_key_pem().into_bytes(),
                    )
                }
            };
            Self {
                alg,
                encoding,
                public,
            }
        }

        /// A token with `claims`, signed with this key, its header naming `kid`.
        pub(crate) fn sign(&self, claims: &serde_json::Value, kid: Option<&str>) -> String {
            let mut header = Header::new(self.alg);
            header.kid = kid.map(str::to_owned);
            encode(&header, claims, &self.encoding).unwrap()
        }

        /// This key as a JWK with `kid`.
        pub(crate) fn jwk(&self, kid: &str) -> serde_json::Value {
            let mut jwk =
                jsonwebtoken::jwk::Jwk::from_encoding_key(&self.encoding, self.alg).unwrap();
            jwk.common.key_id = Some(kid.to_owned());
            serde_json::to_value(jwk).unwrap()
        }
    }

    /// An unsigned `alg: none` token.
    pub(crate) fn unsigned(claims: &serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use jsonwebtoken::Algorithm as A;
    use serde_json::json;

    use super::testing::{TestKey, unsigned};
    use super::*;
    use crate::http::head::testing::request;

    const NOW: u64 = 1_800_000_000;

    /// A policy from an `auth.jwt` block (flow YAML) whose `KEY` is replaced by a file holding `key_bytes`.
    fn policy_with(dir: &tempfile::TempDir, key_bytes: &[u8], jwt: &str) -> AuthPolicy {
        let file = dir.path().join(format!("key{}", jwt.len()));
        std::fs::write(&file, key_bytes).unwrap();
        let jwt = jwt.replace("KEY", &file.display().to_string());
        let text = format!(
            "listeners: [{{name: a, bind: 127.0.0.1:0}}]\nroutes:\n  - echo: true\n    auth: {{ jwt: {jwt} }}\n"
        );
        let config = ringway_config::parse(&text, "t.yaml").unwrap();
        let auth = config.routes.iter().next().unwrap().auth.clone().unwrap();
        AuthPolicy::new(Arc::clone(&auth))
    }

    fn policy(key: &TestKey, extra: &str) -> (tempfile::TempDir, AuthPolicy) {
        let dir = tempfile::tempdir().unwrap();
        let p = policy_with(
            &dir,
            &key.public,
            &format!("{{ algorithms: [{:?}], key_file: KEY{extra} }}", key.alg),
        );
        (dir, p)
    }

    fn bearer(token: &str) -> RequestHead {
        request(format!(
            "GET /x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n"
        ))
    }

    fn verdict(p: &AuthPolicy, token: &str) -> Result<Authorized, Refusal> {
        check(p, &bearer(token), "/x", NOW)
    }

    fn status(p: &AuthPolicy, token: &str) -> u16 {
        verdict(p, token).err().map_or(200, |r| r.status)
    }

    fn claims() -> serde_json::Value {
        json!({ "sub": "alice", "exp": NOW + 60 })
    }

    #[test]
    fn every_algorithm_verifies_with_its_key_file() {
        for alg in [
            A::HS256,
            A::HS384,
            A::HS512,
            A::RS256,
            A::RS384,
            A::RS512,
            A::PS256,
            A::ES256,
            A::ES384,
            A::EdDSA,
        ] {
            let key = TestKey::new(alg);
            let (_dir, p) = policy(&key, ", forward_claims: { sub: X-User }");
            let ok =
                verdict(&p, &key.sign(&claims(), None)).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(
                ok.headers,
                [("x-user".to_owned(), "alice".to_owned())],
                "{alg:?}"
            );
            // A token signed by another key of the same algorithm is refused.
            let other = TestKey::new(alg);
            if alg.family() != jsonwebtoken::AlgorithmFamily::Hmac {
                let refused = verdict(&p, &other.sign(&claims(), None)).unwrap_err();
                assert_eq!(refused.status, 401, "{alg:?}");
                assert_eq!(
                    refused.headers(),
                    &[("www-authenticate", "Bearer error=\"invalid_token\"")]
                );
            }
        }
    }

    #[test]
    fn missing_and_malformed_tokens_are_401() {
        let key = TestKey::new(A::HS256);
        let (_dir, p) = policy(&key, "");
        let head = request("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let refused = check(&p, &head, "/", NOW).unwrap_err();
        assert_eq!(
            (refused.status, refused.headers()),
            (401, &[("www-authenticate", "Bearer")][..])
        );
        for junk in ["x", "a.b", "a.b.c", "....."] {
            assert_eq!(status(&p, junk), 401, "{junk}");
        }
        // Another payload under the original signature.
        let token = key.sign(&claims(), None);
        let forged = key.sign(&json!({ "sub": "mallory", "exp": NOW + 60 }), None);
        let (forged_body, _) = forged.rsplit_once('.').unwrap();
        let (_, signature) = token.rsplit_once('.').unwrap();
        let refused = verdict(&p, &format!("{forged_body}.{signature}")).unwrap_err();
        assert_eq!(
            (refused.status, refused.reason.as_str()),
            (401, "bad token signature")
        );
    }

    #[test]
    fn algorithm_confusion_and_none_are_refused() {
        let rsa = TestKey::new(A::RS256);
        let (_dir, p) = policy(&rsa, "");
        // HS256 "signed" with the RSA public key as the secret (the classic confusion attack).
        let forged = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(A::HS256),
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(&rsa.public).unwrap(),
        )
        .unwrap();
        assert_eq!(verdict(&p, &forged).unwrap_err().status, 401);
        assert_eq!(verdict(&p, &unsigned(&claims())).unwrap_err().status, 401);
        // Even when HS256 is allowed, an RSA key never verifies it (the key set has no HMAC key).
        let dir = tempfile::tempdir().unwrap();
        let jwks = json!({ "keys": [rsa.jwk("r1")] }).to_string();
        let p = policy_with(
            &dir,
            jwks.as_bytes(),
            "{ algorithms: [RS256, HS256], jwks_file: KEY }",
        );
        assert_eq!(status(&p, &rsa.sign(&claims(), Some("r1"))), 200);
        let forged = jsonwebtoken::encode(
            &{
                let mut h = jsonwebtoken::Header::new(A::HS256);
                h.kid = Some("r1".into());
                h
            },
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(&rsa.public).unwrap(),
        )
        .unwrap();
        assert_eq!(status(&p, &forged), 401);
    }

    #[test]
    fn exp_and_nbf_with_leeway_edges() {
        let key = TestKey::new(A::ES256);
        let (_dir, p) = policy(&key, ", leeway: 30s");
        let at = |exp: u64| status(&p, &key.sign(&json!({ "exp": exp }), None));
        assert_eq!(at(NOW - 30), 200, "now == exp + leeway is still valid");
        assert_eq!(at(NOW - 31), 401);
        assert_eq!(
            status(&p, &key.sign(&json!({ "sub": "x" }), None)),
            401,
            "exp is required"
        );
        assert_eq!(status(&p, &key.sign(&json!({ "exp": "soon" }), None)), 401);
        let nbf = |nbf: u64| {
            status(
                &p,
                &key.sign(&json!({ "exp": NOW + 600, "nbf": nbf }), None),
            )
        };
        assert_eq!(nbf(NOW + 30), 200);
        assert_eq!(nbf(NOW + 31), 401);
    }

    #[test]
    fn issuer_and_audience_failures_are_403() {
        let key = TestKey::new(A::EdDSA);
        let (_dir, p) = policy(&key, ", issuer: https://id.example, audience: chat");
        let tok = |c: serde_json::Value| status(&p, &key.sign(&c, None));
        let exp = NOW + 60;
        assert_eq!(
            tok(json!({ "exp": exp, "iss": "https://id.example", "aud": "chat" })),
            200
        );
        assert_eq!(
            tok(json!({ "exp": exp, "iss": "https://id.example", "aud": ["x", "chat"] })),
            200
        );
        assert_eq!(
            tok(json!({ "exp": exp, "iss": "https://evil.example", "aud": "chat" })),
            403
        );
        assert_eq!(
            tok(json!({ "exp": exp, "iss": "https://id.example", "aud": "other" })),
            403
        );
        assert_eq!(tok(json!({ "exp": exp, "aud": "chat" })), 403);
        assert_eq!(tok(json!({ "exp": exp, "iss": "https://id.example" })), 403);
        // Without a configured audience a token's `aud` is not held against it.
        let (_d2, p2) = policy(&key, "");
        assert_eq!(
            status(&p2, &key.sign(&json!({ "exp": exp, "aud": "any" }), None)),
            200
        );
    }

    #[test]
    fn jwks_keys_are_chosen_by_kid() {
        let (a, b) = (TestKey::new(A::ES256), TestKey::new(A::ES256));
        let dir = tempfile::tempdir().unwrap();
        let jwks = json!({ "keys": [a.jwk("a"), b.jwk("b")] }).to_string();
        let p = policy_with(
            &dir,
            jwks.as_bytes(),
            "{ algorithms: [ES256], jwks_file: KEY }",
        );
        assert_eq!(status(&p, &b.sign(&claims(), Some("b"))), 200);
        assert_eq!(status(&p, &a.sign(&claims(), Some("a"))), 200);
        assert_eq!(
            status(&p, &b.sign(&claims(), Some("a"))),
            401,
            "wrong key for the kid"
        );
        assert_eq!(
            status(&p, &b.sign(&claims(), Some("zz"))),
            401,
            "unknown kid"
        );
        assert_eq!(
            status(&p, &b.sign(&claims(), None)),
            401,
            "no kid, two keys"
        );
    }

    #[test]
    fn claims_headers_and_expiry() {
        let key = TestKey::new(A::HS256);
        let (_dir, p) = policy(
            &key,
            ", leeway: 5s, enforce_expiry: true, forward_claims: { sub: X-User-Id, roles: X-Roles, n: X-N, gone: X-Gone }",
        );
        let ok = verdict(
            &p,
            &key.sign(
                &json!({ "sub": "u1", "roles": ["a", "b"], "n": 7, "exp": NOW + 100 }),
                None,
            ),
        )
        .unwrap();
        assert_eq!(
            ok.headers,
            [
                ("x-n".to_owned(), "7".to_owned()),
                ("x-roles".to_owned(), "a,b".to_owned()),
                ("x-user-id".to_owned(), "u1".to_owned()),
            ]
        );
        assert_eq!(ok.expires_at, Some(NOW + 105));
        assert_eq!(p.header_names().len(), 4);
        let bad = verdict(
            &p,
            &key.sign(&json!({ "sub": "a\r\nX-Admin: 1", "exp": NOW + 100 }), None),
        );
        assert_eq!(bad.unwrap_err().status, 403);
        let (_d2, p2) = policy(&key, "");
        assert_eq!(
            verdict(&p2, &key.sign(&claims(), None)).unwrap().expires_at,
            None
        );
    }

    #[test]
    fn subprotocol_token_is_used_and_removed() {
        let key = TestKey::new(A::HS256);
        let (_dir, p) = policy(&key, ", from: [cookie:jwt, subprotocol]");
        let token = key.sign(&claims(), None);
        let head = request(format!(
            "GET /ws HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Protocol: chat, bearer.{token}\r\n\r\n"
        ));
        let ok = check(&p, &head, "/ws", NOW).unwrap();
        assert_eq!(ok.subprotocols_left, Some(vec!["chat".to_owned()]));
        let head = request(format!(
            "GET /ws HTTP/1.1\r\nHost: h\r\nCookie: jwt={token}\r\n\r\n"
        ));
        assert!(check(&p, &head, "/ws", NOW).is_ok());
        // The header source is not configured here.
        assert_eq!(status(&p, &token), 401);
    }
}
