//! Certificate/key pairs from PEM: parsing, the checks `ringway check` and every (re)load run, and what a pair
//! serves.
//!
//! Owns: turning PEM bytes into a rustls [`CertifiedKey`], checking that the key belongs to the certificate,
//! reading the names the leaf serves from its subjectAltName (users never repeat them in YAML) and its validity
//! dates. Does not own: choosing a pair for a handshake (`super::resolver`), reading files at times of its own
//! (callers decide when: start, check, reload).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Which file of a pair a problem is about (so `ringway check` can point at the `cert:` or the `key:` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PairFile {
    Cert,
    Key,
}

/// Why a pair cannot be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        file: PairFile,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no PEM certificate in the file ({reason})", path.display())]
    NoCertificate { path: PathBuf, reason: String },
    #[error("{}: no PEM private key in the file ({reason})", path.display())]
    NoKey { path: PathBuf, reason: String },
    #[error("{}: unsupported private key: {reason} (RSA, ECDSA P-256/P-384 and Ed25519 are supported)", path.display())]
    UnsupportedKey { path: PathBuf, reason: String },
    #[error("{}: the certificate cannot be parsed: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{}: the key does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "{}: the certificate names no DNS name or IP address in subjectAltName (clients match names only there)",
        path.display()
    )]
    NoNames { path: PathBuf },
}

impl CertError {
    /// The file of the pair this problem is about.
    pub(crate) fn file(&self) -> PairFile {
        match self {
            CertError::Read { file, .. } => *file,
            CertError::NoKey { .. }
            | CertError::UnsupportedKey { .. }
            | CertError::KeyMismatch { .. } => PairFile::Key,
            CertError::NoCertificate { .. }
            | CertError::BadCertificate { .. }
            | CertError::NoNames { .. } => PairFile::Cert,
        }
    }
}

/// A pair ready to serve.
#[derive(Debug, Clone)]
pub(crate) struct LoadedPair {
    pub(crate) key: Arc<CertifiedKey>,
    /// DNS names from the leaf's SANs, lowercased; `*.example.com` entries are wildcards.
    pub(crate) names: Vec<String>,
    /// Validity of the leaf, in seconds since the Unix epoch.
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

/// A pair's validity at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validity {
    Valid,
    /// Valid, but for fewer than [`EXPIRY_WARNING_DAYS`] more days.
    ExpiresSoon {
        days: i64,
    },
    Expired {
        days_ago: i64,
    },
    NotYetValid {
        days: i64,
    },
}

/// Certificates that expire within this many days are reported (a warning, not an error).
pub(crate) const EXPIRY_WARNING_DAYS: i64 = 14;

impl LoadedPair {
    /// The leaf's validity at `now` (seconds since the Unix epoch).
    pub(crate) fn validity(&self, now: i64) -> Validity {
        const DAY: i64 = 86_400;
        if now < self.not_before {
            Validity::NotYetValid {
                days: (self.not_before - now + DAY - 1) / DAY,
            }
        } else if now > self.not_after {
            Validity::Expired {
                days_ago: (now - self.not_after) / DAY,
            }
        } else if self.not_after - now < EXPIRY_WARNING_DAYS * DAY {
            Validity::ExpiresSoon {
                days: (self.not_after - now) / DAY,
            }
        } else {
            Validity::Valid
        }
    }
}

/// Reads and checks the pair in `cert` and `key`.
pub(crate) fn load(cert: &Path, key: &Path) -> Result<LoadedPair, CertError> {
    let read = |file, path: &Path| {
        std::fs::read(path).map_err(|source| CertError::Read {
            file,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(PairFile::Cert, cert)?;
    let key_pem = read(PairFile::Key, key)?;
    parse(&cert_pem, &key_pem, cert, key)
}

/// Checks a pair given as PEM text; `cert_path` and `key_path` only name the files in errors.
pub(crate) fn parse(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<LoadedPair, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::NoCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: cert_path.to_owned(),
            reason: "no `BEGIN CERTIFICATE` section".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertError::NoKey {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    let signing_key = any_supported_type(&key_der).map_err(|e| CertError::UnsupportedKey {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    let (_, leaf) =
        X509Certificate::from_der(chain[0].as_ref()).map_err(|e| CertError::BadCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    let mut names = Vec::new();
    let mut has_ip = false;
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => names.push(n.to_ascii_lowercase()),
                GeneralName::IPAddress(_) => has_ip = true,
                _ => {}
            }
        }
    }
    if names.is_empty() && !has_ip {
        return Err(CertError::NoNames {
            path: cert_path.to_owned(),
        });
    }
    let validity = leaf.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let key = CertifiedKey::new(chain, signing_key);
    match key.keys_match() {
        Ok(()) => {}
        // A key type whose public half rustls cannot derive: nothing to compare, the handshake will tell.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(CertError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
    }
    Ok(LoadedPair {
        key: Arc::new(key),
        names,
        not_before,
        not_after,
    })
}

/// What an upstream is told about a verified client certificate: `subject=<RFC 4514>` and its SANs
/// (`; dns=...`, `; uri=...`, `; email=...`, `; ip=...`), in one header value (control characters and non-ASCII are
/// escaped, so nothing in a certificate can break the request head). `None` if the certificate does not parse.
pub(crate) fn describe_client(leaf: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    let mut out = format!("subject={}", cert.subject());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            let (kind, value) = match name {
                GeneralName::DNSName(n) => ("dns", n.to_string()),
                GeneralName::URI(u) => ("uri", u.to_string()),
                GeneralName::RFC822Name(e) => ("email", e.to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => (
                        "ip",
                        std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string(),
                    ),
                    16 => match <[u8; 16]>::try_from(*ip) {
                        Ok(b) => ("ip", std::net::Ipv6Addr::from(b).to_string()),
                        Err(_) => continue,
                    },
                    _ => continue,
                },
                _ => continue,
            };
            out.push_str("; ");
            out.push_str(kind);
            out.push('=');
            out.push_str(&value);
        }
    }
    let mut escaped = String::with_capacity(out.len());
    for c in out.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            escaped.push(c);
        } else {
            escaped.extend(c.escape_unicode());
        }
    }
    Some(escaped)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed pair for `names` (PEM cert, PEM key).
    pub(crate) fn pair(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .self_signed(&key)
            .expect("self-signed");
        (cert.pem(), key.serialize_pem())
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn names_come_from_the_sans() {
        let (cert, key) = pair(&["Example.COM", "*.example.com"]);
        let loaded = parse(cert.as_bytes(), key.as_bytes(), &p("c"), &p("k")).expect("loads");
        assert_eq!(loaded.names, ["example.com", "*.example.com"]);
        assert!(loaded.not_after > loaded.not_before);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = pair(&["a.test"]);
        let (_, other_key) = pair(&["a.test"]);
        let err = parse(cert.as_bytes(), other_key.as_bytes(), &p("c"), &p("k")).unwrap_err();
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
        assert_eq!(err.file(), PairFile::Key);
    }

    #[test]
    fn garbage_and_swapped_files_name_the_file_at_fault() {
        let (cert, key) = pair(&["a.test"]);
        let err = parse(b"not pem", key.as_bytes(), &p("c"), &p("k")).unwrap_err();
        assert_eq!(err.file(), PairFile::Cert, "{err}");
        let err = parse(cert.as_bytes(), cert.as_bytes(), &p("c"), &p("k")).unwrap_err();
        assert_eq!(err.file(), PairFile::Key, "{err}");
        let err = parse(key.as_bytes(), key.as_bytes(), &p("c"), &p("k")).unwrap_err();
        assert_eq!(err.file(), PairFile::Cert, "{err}");
    }

    #[test]
    fn a_client_is_described_by_subject_and_sans_without_control_characters() {
        let mut params =
            rcgen::CertificateParams::new(vec!["alice.example".to_owned()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice\r\nx-injected: 1");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let text = describe_client(cert.der()).expect("parses");
        assert!(text.starts_with("subject=CN=alice"), "{text}");
        assert!(text.ends_with("; dns=alice.example"), "{text}");
        assert!(!text.contains('\r') && !text.contains('\n'), "{text}");
    }

    #[test]
    fn a_certificate_without_names_is_refused() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let err = parse(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            &p("c"),
            &p("k"),
        )
        .unwrap_err();
        assert!(matches!(err, CertError::NoNames { .. }), "{err}");
        assert_eq!(err.file(), PairFile::Cert);
    }

    #[test]
    fn validity_is_judged_in_days() {
        let (cert, key) = pair(&["a.test"]);
        let mut loaded = parse(cert.as_bytes(), key.as_bytes(), &p("c"), &p("k")).expect("loads");
        loaded.not_before = 1_000_000;
        loaded.not_after = 1_000_000 + 30 * 86_400;
        assert_eq!(
            loaded.validity(1_000_000 - 86_400),
            Validity::NotYetValid { days: 1 }
        );
        assert_eq!(loaded.validity(1_000_000 + 86_400), Validity::Valid);
        assert_eq!(
            loaded.validity(1_000_000 + 20 * 86_400),
            Validity::ExpiresSoon { days: 10 }
        );
        assert_eq!(
            loaded.validity(1_000_000 + 32 * 86_400),
            Validity::Expired { days_ago: 2 }
        );
    }
}
