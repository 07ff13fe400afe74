//! A route's `auth:` block: JWT validation settings and the verification keys, read from their files when the
//! route file loads (so a reload picks up new keys and a broken key file refuses the load, pointing at its line).
//!
//! Owns: the raw `auth:` shape, checking its values (algorithms, token sources, claim headers), reading `key_file`
//! / `jwks_file` into `jsonwebtoken` decoding keys, and refusing key material that cannot serve the algorithms
//! (a PEM key as an HMAC secret, a private key, a secret shorter than the hash). Does not own: checking tokens
//! (the gateway's `auth` module does that, per request, with these keys).
//!
//! ```yaml
//! auth:
//!   jwt:
//!     algorithms: [RS256]          # required: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA
//!     key_file: keys/jwt.pub.pem   # one of key_file (PEM public key, or the HMAC secret) and jwks_file
//!     issuer: https://id.example   # `iss` must equal this (403 otherwise); default: not checked
//!     audience: chat               # `aud` must contain this (403 otherwise); default: not checked
//!     leeway: 60s                  # clock skew allowed on exp/nbf; default 60s
//!     from: [header]               # header | cookie:NAME | query:NAME | subprotocol[:PREFIX]; default [header]
//!     forward_claims: { sub: X-User-Id }   # claim -> request header for the upstream; default none
//!     enforce_expiry: false        # close WebSockets with 1008 when the token expires; default false
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, errors::ErrorKind};
use serde::Deserialize;

pub use jsonwebtoken::{Algorithm, AlgorithmFamily};

use crate::error::{Problem, join};
use crate::units::{Scalar, parse_bool, parse_duration};

type Result<T> = std::result::Result<T, Problem>;

/// `auth:` of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub jwt: Option<RawJwt>,
}

/// `auth.jwt:` of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub algorithms: Option<Vec<Scalar>>,
    pub key_file: Option<Scalar>,
    pub jwks_file: Option<Scalar>,
    pub issuer: Option<Scalar>,
    pub audience: Option<Scalar>,
    pub leeway: Option<Scalar>,
    pub from: Option<Vec<Scalar>>,
    pub forward_claims: Option<BTreeMap<String, Scalar>>,
    pub enforce_expiry: Option<Scalar>,
    /// Not in the YAML: the folder key files are read from (the route file's; the working directory for
    /// [`crate::parse`]), set before conversion.
    #[serde(skip)]
    pub dir: std::path::PathBuf,
}

/// A route's validated JWT policy and its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuth {
    /// The `alg` values accepted; a token with any other (`none` included) is refused.
    pub algorithms: Vec<Algorithm>,
    /// The verification keys.
    pub keys: Arc<JwtKeys>,
    /// Required `iss`. Default `None` (not checked).
    pub issuer: Option<String>,
    /// Required member of `aud`. Default `None` (not checked; a token's `aud` is then ignored).
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default 60s.
    pub leeway: Duration,
    /// Where the token is looked for, in order; the first place holding one decides. Default `[header]`.
    pub from: Vec<TokenSource>,
    /// `(claim, header name lowercased)`: claims copied into request headers for the upstream. The client's own
    /// headers of these names are always removed on this route.
    pub forward_claims: Vec<(String, String)>,
    /// Close a WebSocket with 1008 once the token has expired (`exp` + `leeway`). Default false.
    pub enforce_expiry: bool,
}

/// Where a token may be found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer TOKEN`.
    Header,
    /// The cookie of this name.
    Cookie(String),
    /// The query parameter of this name.
    Query(String),
    /// A `Sec-WebSocket-Protocol` entry `PREFIX` + token (default prefix `bearer.`); the entry is removed before
    /// the upstream sees the list and never answered.
    Subprotocol(String),
}

/// The default prefix of the `Sec-WebSocket-Protocol` entry carrying a token.
pub const DEFAULT_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// The keys of one route: one from `key_file`, or those of a `jwks_file` usable with the algorithms.
#[derive(Clone)]
pub struct JwtKeys {
    /// Where they came from (for logs).
    pub file: String,
    pub entries: Vec<JwtKey>,
    /// The file's bytes: two loads of the same file are equal.
    source: Vec<u8>,
}

/// One verification key.
#[derive(Clone)]
pub struct JwtKey {
    /// The JWK's `kid` (tokens name it in their header); `None` for a `key_file`.
    pub kid: Option<String>,
    /// The JWK's `alg`, when it states one: the key verifies nothing else.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self
            .entries
            .iter()
            .map(|k| k.kid.as_deref().unwrap_or("-"))
            .collect();
        f.debug_struct("JwtKeys")
            .field("file", &self.file)
            .field("kids", &kids)
            .finish()
    }
}

impl PartialEq for JwtKeys {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file && self.source == other.source
    }
}

impl Eq for JwtKeys {}

/// Headers a claim may not be forwarded in: the gateway writes them itself or they frame the request.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
];

/// Converts `auth:` at `path` (`routes[N].auth`); key files are read relative to `RawJwt::dir`.
pub(crate) fn route_auth(raw: Option<RawAuth>, path: &str) -> Result<Option<JwtAuth>> {
    let Some(raw) = raw else { return Ok(None) };
    let Some(jwt) = raw.jwt else {
        return Err(Problem::new(
            path,
            "`auth` needs a `jwt:` block (the only kind of authentication supported)",
        ));
    };
    jwt_auth(jwt, &join(path, "jwt")).map(Some)
}

/// Points every route's key files at `dir` (relative names are read from there).
pub(crate) fn set_key_dir(raw: &mut crate::raw::RawConfig, dir: &Path) {
    for jwt in raw
        .routes
        .iter_mut()
        .flatten()
        .filter_map(|r| r.auth.as_mut()?.jwt.as_mut())
    {
        jwt.dir = dir.to_owned();
    }
}

fn jwt_auth(raw: RawJwt, path: &str) -> Result<JwtAuth> {
    let dir = raw.dir.as_path();
    let p = |key: &str| join(path, key);
    let algorithms = algorithms(raw.algorithms, &p("algorithms"))?;
    let non_empty = |s: Option<Scalar>, key: &str| -> Result<Option<String>> {
        match s {
            Some(s) if s.0.is_empty() => Err(Problem::new(p(key), "may not be empty")),
            other => Ok(other.map(|s| s.0)),
        }
    };
    let issuer = non_empty(raw.issuer, "issuer")?;
    let audience = non_empty(raw.audience, "audience")?;
    let leeway = match raw.leeway {
        None => Duration::from_secs(60),
        Some(s) => parse_duration(&s.0).map_err(|m| Problem::new(p("leeway"), m))?,
    };
    let from = match raw.from {
        None => vec![TokenSource::Header],
        Some(list) if list.is_empty() => {
            return Err(Problem::new(
                p("from"),
                "at least one token source is required, e.g. `[header]`",
            ));
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                token_source(&s.0).map_err(|m| Problem::new(format!("{}[{i}]", p("from")), m))
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let mut forward_claims = Vec::new();
    for (claim, header) in raw.forward_claims.unwrap_or_default() {
        let at = join(&p("forward_claims"), &claim);
        let name = header.0.to_ascii_lowercase();
        if !crate::convert::is_token(&name) {
            return Err(Problem::new(
                at,
                format!("`{}` is not a valid header name", header.0),
            ));
        }
        if RESERVED_HEADERS.contains(&name.as_str()) || name.starts_with("sec-websocket-") {
            return Err(Problem::new(
                at,
                format!(
                    "`{}` is written by the gateway itself; choose another header",
                    header.0
                ),
            ));
        }
        if forward_claims.iter().any(|(_, h)| *h == name) {
            return Err(Problem::new(
                at,
                format!("header `{}` already carries another claim", header.0),
            ));
        }
        forward_claims.push((claim, name));
    }
    let enforce_expiry = match raw.enforce_expiry {
        None => false,
        Some(s) => parse_bool(&s.0).map_err(|m| Problem::new(p("enforce_expiry"), m))?,
    };
    // Files last: every other mistake is reported without touching the file system.
    let keys = match (raw.key_file, raw.jwks_file) {
        (Some(_), Some(_)) => {
            return Err(Problem::new(
                p("jwks_file"),
                "give either `key_file` or `jwks_file`, not both",
            ));
        }
        (None, None) => {
            return Err(Problem::new(
                path,
                "missing key: add `key_file: FILE` (a PEM public key, or the HMAC secret) or `jwks_file: FILE`",
            ));
        }
        (Some(file), None) => key_file(&file.0, dir, &algorithms, &p("key_file"))?,
        (None, Some(file)) => jwks_file(&file.0, dir, &algorithms, &p("jwks_file"))?,
    };
    Ok(JwtAuth {
        algorithms,
        keys: Arc::new(keys),
        issuer,
        audience,
        leeway,
        from,
        forward_claims,
        enforce_expiry,
    })
}

const ALGORITHMS: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

fn algorithms(raw: Option<Vec<Scalar>>, path: &str) -> Result<Vec<Algorithm>> {
    let list = raw.unwrap_or_default();
    if list.is_empty() {
        return Err(Problem::new(
            path,
            format!("at least one algorithm is required, e.g. `[RS256]` (allowed: {ALGORITHMS})"),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let alg: Algorithm = s.0.parse().map_err(|_| {
            Problem::new(
                format!("{path}[{i}]"),
                format!("unknown algorithm `{}` (allowed: {ALGORITHMS})", s.0),
            )
        })?;
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    Ok(out)
}

fn token_source(text: &str) -> std::result::Result<TokenSource, String> {
    let (kind, arg) = match text.split_once(':') {
        Some((k, a)) => (k.trim(), Some(a.trim())),
        None => (text.trim(), None),
    };
    let named = |arg: Option<&str>, what: &str| match arg {
        Some(a) if !a.is_empty() && crate::convert::is_token(a) => Ok(a.to_owned()),
        _ => Err(format!(
            "`{text}`: write `{what}:NAME` with the {what}'s name"
        )),
    };
    match kind {
        "header" if arg.is_none() => Ok(TokenSource::Header),
        "cookie" => named(arg, "cookie").map(TokenSource::Cookie),
        "query" => named(arg, "query").map(TokenSource::Query),
        "subprotocol" => match arg {
            None => Ok(TokenSource::Subprotocol(
                DEFAULT_SUBPROTOCOL_PREFIX.to_owned(),
            )),
            Some(a) if !a.is_empty() && crate::convert::is_token(a) => {
                Ok(TokenSource::Subprotocol(a.to_owned()))
            }
            Some(_) => Err(format!(
                "`{text}`: the subprotocol prefix must be a token such as `bearer.`"
            )),
        },
        _ => Err(format!(
            "unknown token source `{text}` (allowed: header, cookie:NAME, query:NAME, subprotocol, subprotocol:PREFIX)"
        )),
    }
}

fn read(file: &str, dir: &Path, path: &str, key: &str) -> Result<Vec<u8>> {
    std::fs::read(dir.join(file))
        .map_err(|e| Problem::new(path, format!("cannot read {key} `{file}`: {e}")))
}

fn family_name(f: AlgorithmFamily) -> &'static str {
    match f {
        AlgorithmFamily::Hmac => "HS",
        AlgorithmFamily::Rsa => "RS/PS",
        AlgorithmFamily::Ec => "ES",
        AlgorithmFamily::Ed => "EdDSA",
    }
}

/// One key for all `algorithms`, which must then be of one family: the HMAC secret or a PEM public key.
fn key_file(file: &str, dir: &Path, algorithms: &[Algorithm], path: &str) -> Result<JwtKeys> {
    let family = algorithms[0].family();
    if algorithms.iter().any(|a| a.family() != family) {
        return Err(Problem::new(
            path,
            "one key_file serves algorithms of one family only (HS, RS/PS, ES or EdDSA); use a jwks_file for several",
        ));
    }
    let bytes = read(file, dir, path, "key_file")?;
    let pem_label = pem_label(&bytes);
    if let Some(label) = &pem_label
        && label.contains("PRIVATE")
    {
        return Err(Problem::new(
            path,
            format!("`{file}` holds a private key (`{label}`); give the public key"),
        ));
    }
    let key = match family {
        AlgorithmFamily::Hmac => {
            if let Some(label) = pem_label {
                return Err(Problem::new(
                    path,
                    format!(
                        "HS algorithms verify with a shared secret, but `{file}` holds a PEM key (`{label}`); \
                         a public key file goes with RS/PS, ES or EdDSA"
                    ),
                ));
            }
            let secret = bytes.trim_ascii_end();
            // RFC 7518 §3.2: the key must be at least as long as the hash output.
            let need = algorithms
                .iter()
                .map(|a| match a {
                    Algorithm::HS384 => 48,
                    Algorithm::HS512 => 64,
                    _ => 32,
                })
                .max()
                .unwrap_or(32);
            if secret.len() < need {
                return Err(Problem::new(
                    path,
                    format!(
                        "the secret in `{file}` is {} bytes; {} needs at least {need} (RFC 7518 §3.2)",
                        secret.len(),
                        algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join("/"),
                    ),
                ));
            }
            DecodingKey::from_secret(secret)
        }
        _ if pem_label.is_none() => {
            return Err(Problem::new(
                path,
                format!("`{file}` is not a PEM public key (`-----BEGIN PUBLIC KEY-----`)"),
            ));
        }
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&bytes),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&bytes),
        _ => DecodingKey::from_ed_pem(&bytes),
    }
    .map_err(|e| {
        Problem::new(
            path,
            format!(
                "`{file}` is not a usable {} key: {}",
                family_name(family),
                key_error(e.kind())
            ),
        )
    })?;
    Ok(JwtKeys {
        file: file.to_owned(),
        entries: vec![JwtKey {
            kid: None,
            alg: None,
            key,
        }],
        source: bytes,
    })
}

fn key_error(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidKeyFormat => "invalid key format".to_owned(),
        ErrorKind::InvalidRsaKey(m) => format!("invalid RSA key ({m})"),
        ErrorKind::InvalidEcdsaKey => "invalid EC key".to_owned(),
        ErrorKind::InvalidEddsaKey => "invalid Ed25519 key".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The label of the first PEM block (`PUBLIC KEY`), if the file is PEM.
fn pem_label(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let end = text[start..].find("-----")?;
    Some(text[start..start + end].to_owned())
}

/// The keys of a JWKS file (RFC 7517 `{"keys": [...]}`) that fit one of `algorithms`; keys of other types are
/// skipped, and none fitting is an error.
fn jwks_file(file: &str, dir: &Path, algorithms: &[Algorithm], path: &str) -> Result<JwtKeys> {
    let bytes = read(file, dir, path, "jwks_file")?;
    let set: JwkSet = serde_json::from_slice(&bytes)
        .map_err(|e| Problem::new(path, format!("`{file}` is not a JWKS document: {e}")))?;
    let mut entries = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        let fits = match alg {
            Some(a) => algorithms.contains(&a) && a.family() == key.family(),
            None => algorithms.iter().any(|a| a.family() == key.family()),
        };
        if !fits {
            continue;
        }
        let kid = jwk.common.key_id.clone();
        if kid.is_some() && entries.iter().any(|e: &JwtKey| e.kid == kid) {
            return Err(Problem::new(
                path,
                format!(
                    "`{file}`: key {i} repeats kid `{}`",
                    kid.unwrap_or_default()
                ),
            ));
        }
        entries.push(JwtKey { kid, alg, key });
    }
    if entries.is_empty() {
        return Err(Problem::new(
            path,
            format!(
                "`{file}` has no key usable with {}",
                algorithms
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(JwtKeys {
        file: file.to_owned(),
        entries,
        source: bytes,
    })
}
