//! Choosing the certificate for a handshake by SNI.
//!
//! Owns: the name → pair index of one listener (exact names and `*.` wildcards from the certificates' SANs, the
//! default pair) and the unknown-name policy. Does not own: loading pairs (`super::certs`), sending the alert a
//! refusal calls for (`super::accept` reads [`take_refused`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::LoadedPair;

thread_local! {
    /// Set when this thread's last resolve refused an unknown name: rustls itself can only answer a refusal
    /// with `access_denied`, and the gateway answers `unrecognized_name` (RFC 6066 §3) instead.
    static REFUSED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the last handshake step on this thread refused an unknown server name (and clears the mark).
pub(crate) fn take_refused() -> bool {
    REFUSED.with(|r| r.replace(false))
}

/// The certificates of one listener, indexed by the names they serve.
#[derive(Debug)]
pub(crate) struct CertSet {
    pairs: Vec<LoadedPair>,
    exact: HashMap<String, usize>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, usize>,
    default: usize,
    refuse_unknown: bool,
}

impl CertSet {
    /// Indexes `pairs` (at least one). A name served by several pairs goes to the first listed.
    pub(crate) fn new(pairs: Vec<LoadedPair>, default: usize, refuse_unknown: bool) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, pair) in pairs.iter().enumerate() {
            for name in &pair.names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()).or_insert(i),
                    None => exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        Self {
            default: default.min(pairs.len().saturating_sub(1)),
            pairs,
            exact,
            wildcard,
            refuse_unknown,
        }
    }

    /// The pairs, in configuration order.
    #[cfg(test)]
    pub(crate) fn pairs(&self) -> &[LoadedPair] {
        &self.pairs
    }

    /// The pair for a client asking for `sni` (`None`: no SNI), or `None` to refuse.
    pub(crate) fn pick(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let Some(sni) = sni else {
            return Some(&self.pairs[self.default].key);
        };
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        let found = self.exact.get(&name).or_else(|| {
            // A wildcard covers exactly one label (RFC 6125 §6.4.3): `*.example.com` serves `a.example.com` only.
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        });
        match found {
            Some(&i) => Some(&self.pairs[i].key),
            None if self.refuse_unknown => None,
            None => Some(&self.pairs[self.default].key),
        }
    }
}

/// rustls' view of a [`CertSet`].
#[derive(Debug)]
pub(crate) struct SniResolver(pub(crate) Arc<CertSet>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let picked = self.0.pick(hello.server_name()).cloned();
        if picked.is_none() {
            REFUSED.with(|r| r.set(true));
            tracing::info!(
                sni = hello.server_name().unwrap_or(""),
                "TLS refused: no certificate for this server name"
            );
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::tls::certs::{parse, tests::pair};

    fn loaded(names: &[&str]) -> LoadedPair {
        let (c, k) = pair(names);
        parse(c.as_bytes(), k.as_bytes(), Path::new("c"), Path::new("k")).expect("pair")
    }

    #[test]
    fn exact_names_then_one_label_wildcards_then_the_default() {
        let set = CertSet::new(
            vec![
                loaded(&["default.test"]),
                loaded(&["api.example.com"]),
                loaded(&["*.example.com"]),
            ],
            0,
            false,
        );
        let which = |sni| {
            let key = set.pick(sni).expect("served");
            set.pairs().iter().position(|p| Arc::ptr_eq(&p.key, key))
        };
        assert_eq!(which(Some("api.example.com")), Some(1));
        assert_eq!(which(Some("API.Example.com.")), Some(1));
        assert_eq!(which(Some("chat.example.com")), Some(2));
        assert_eq!(
            which(Some("a.b.example.com")),
            Some(0),
            "a wildcard covers one label"
        );
        assert_eq!(which(Some("example.com")), Some(0), "nor the parent itself");
        assert_eq!(which(None), Some(0));
    }

    #[test]
    fn unknown_names_can_be_refused_but_no_sni_gets_the_default() {
        let set = CertSet::new(vec![loaded(&["a.test"]), loaded(&["b.test"])], 1, true);
        assert!(set.pick(Some("c.test")).is_none());
        assert!(Arc::ptr_eq(
            set.pick(None).expect("default"),
            &set.pairs()[1].key
        ));
    }
}
