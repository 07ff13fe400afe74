//! The TLS setup of one listener: what is shared by all workers (the certificates, reloadable; the ticket keys;
//! the client-certificate verifier) and what each worker keeps for itself (its rustls config and session cache).
//!
//! Owns: building rustls `ServerConfig`s from the validated settings, re-reading the certificate files on reload
//! (a broken new file keeps the old pairs serving), and handing each worker the newest config without a lock on
//! the handshake path (a generation counter is compared; the lock is taken only after a reload).
//! Does not own: the handshake itself (`super::accept`), when reloads happen (`crate::server`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ringway_config::{ListenerTls, TlsVersion, UnknownSni};
use rustls::RootCertStore;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    NoServerSessionStorage, ProducesTickets, ServerConfig, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::certs::{self, CertError, LoadedPair};
use super::resolver::{CertSet, SniResolver};

/// Why a listener's TLS setup cannot be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsSetupError {
    /// A certificate/key pair is unusable; `yaml_path` is its entry in the route file.
    #[error("{yaml_path}: {source}")]
    Pair {
        yaml_path: String,
        #[source]
        source: CertError,
    },
    /// The client-certificate CA bundle is unusable.
    #[error("{yaml_path}: {message}")]
    ClientCa { yaml_path: String, message: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsSetupError {
    /// The YAML path of the key the problem is about (`...certificates[0].cert`), for `file:line:col` messages.
    pub(crate) fn yaml_key(&self) -> Option<String> {
        match self {
            TlsSetupError::Pair { yaml_path, source } => Some(format!(
                "{yaml_path}.{}",
                match source.file() {
                    certs::PairFile::Cert => "cert",
                    certs::PairFile::Key => "key",
                }
            )),
            TlsSetupError::ClientCa { yaml_path, .. } => Some(yaml_path.clone()),
            TlsSetupError::Rustls(_) => None,
        }
    }

    /// The message without the YAML path.
    pub(crate) fn reason(&self) -> String {
        match self {
            TlsSetupError::Pair { source, .. } => source.to_string(),
            TlsSetupError::ClientCa { message, .. } => message.clone(),
            TlsSetupError::Rustls(e) => e.to_string(),
        }
    }
}

/// Loads every pair of `tls`, in order.
pub(crate) fn load_pairs(tls: &ListenerTls) -> Result<Vec<LoadedPair>, TlsSetupError> {
    tls.certificates
        .iter()
        .map(|c| {
            certs::load(&c.cert, &c.key).map_err(|source| TlsSetupError::Pair {
                yaml_path: c.yaml_path.clone(),
                source,
            })
        })
        .collect()
}

/// The part of a listener's TLS every worker shares.
pub(crate) struct SharedTls {
    settings: ListenerTls,
    /// Bumped on every successful reload; workers compare it per handshake.
    generation: AtomicU64,
    certs: Mutex<Arc<CertSet>>,
    /// Session-ticket keys (made at start, rotated by rustls every 6 hours, never written anywhere).
    ticketer: Option<Arc<dyn ProducesTickets>>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// Where the client CA bundle is named in the route file.
    listener_path: String,
}

impl std::fmt::Debug for SharedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTls")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl SharedTls {
    /// Loads the certificates and builds what the workers share. `listener_path` is `listeners[N]`.
    pub(crate) fn new(settings: &ListenerTls, listener_path: &str) -> Result<Self, TlsSetupError> {
        let pairs = load_pairs(settings)?;
        let certs = CertSet::new(
            pairs,
            settings.default_certificate,
            settings.unknown_sni == UnknownSni::Refuse,
        );
        let ticketer = if settings.session_tickets {
            Some(rustls::crypto::aws_lc_rs::Ticketer::new()?)
        } else {
            None
        };
        let verifier = match &settings.client_auth {
            None => None,
            Some(auth) => {
                let yaml_path = format!("{listener_path}.tls.client_auth.ca");
                let fail = |message: String| TlsSetupError::ClientCa {
                    yaml_path: yaml_path.clone(),
                    message,
                };
                let pem = std::fs::read(&auth.ca)
                    .map_err(|e| fail(format!("cannot read {}: {e}", auth.ca.display())))?;
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| fail(format!("{}: {e}", auth.ca.display())))?;
                    roots
                        .add(cert)
                        .map_err(|e| fail(format!("{}: {e}", auth.ca.display())))?;
                }
                if roots.is_empty() {
                    return Err(fail(format!(
                        "{}: no PEM certificate in the CA bundle",
                        auth.ca.display()
                    )));
                }
                let builder = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
                );
                let builder = if auth.required {
                    builder
                } else {
                    builder.allow_unauthenticated()
                };
                Some(
                    builder
                        .build()
                        .map_err(|e| fail(format!("{}: {e}", auth.ca.display())))?,
                )
            }
        };
        Ok(Self {
            settings: settings.clone(),
            generation: AtomicU64::new(0),
            certs: Mutex::new(Arc::new(certs)),
            ticketer,
            verifier,
            listener_path: listener_path.to_owned(),
        })
    }

    /// Re-reads the certificate files: on success new handshakes use the new pairs (live connections keep
    /// theirs); on failure the old pairs keep serving and the error says why.
    pub(crate) fn reload(&self) -> Result<usize, TlsSetupError> {
        let pairs = load_pairs(&self.settings)?;
        let count = pairs.len();
        let set = CertSet::new(
            pairs,
            self.settings.default_certificate,
            self.settings.unknown_sni == UnknownSni::Refuse,
        );
        // A poisoned lock only means a panic elsewhere while swapping an Arc; the value is still whole.
        *self.certs.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(count)
    }

    /// The listener's YAML path (`listeners[N]`).
    pub(crate) fn listener_path(&self) -> &str {
        &self.listener_path
    }

    fn current_certs(&self) -> Arc<CertSet> {
        self.certs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One worker's TLS for one listener.
pub(crate) struct WorkerTls {
    shared: Arc<SharedTls>,
    /// This worker's session-ID cache (`None`: off); kept across reloads.
    cache: Arc<dyn StoresServerSessions>,
    current: RefCell<(u64, Arc<ServerConfig>)>,
}

impl WorkerTls {
    pub(crate) fn new(shared: Arc<SharedTls>) -> Result<Self, TlsSetupError> {
        let cache: Arc<dyn StoresServerSessions> = match shared.settings.session_cache {
            0 => Arc::new(NoServerSessionStorage {}),
            n => ServerSessionMemoryCache::new(n),
        };
        let generation = shared.generation.load(Ordering::Acquire);
        let config = build_config(&shared, shared.current_certs(), cache.clone())?;
        Ok(Self {
            shared,
            cache,
            current: RefCell::new((generation, config)),
        })
    }

    /// The config for a new handshake: rebuilt only when the certificates were reloaded since the last one.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let mut current = self.current.borrow_mut();
        if current.0 != generation {
            match build_config(
                &self.shared,
                self.shared.current_certs(),
                self.cache.clone(),
            ) {
                Ok(config) => *current = (generation, config),
                Err(e) => {
                    tracing::error!(error = %e, "cannot rebuild the TLS config; keeping the previous one")
                }
            }
        }
        current.1.clone()
    }
}

fn build_config(
    shared: &SharedTls,
    certs: Arc<CertSet>,
    cache: Arc<dyn StoresServerSessions>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let settings = &shared.settings;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)?;
    let builder = match &shared.verifier {
        Some(v) => builder.with_client_cert_verifier(v.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver(certs)));
    // The gateway speaks HTTP/1.1 only; a client that offers ALPN without it is refused (no_application_protocol).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = cache;
    // After the handshake `super::records` takes the keys and rustls' connection state is dropped.
    config.enable_secret_extraction = true;
    // ... and the traffic secrets, for key updates (`super::secrets`).
    config.key_log = Arc::new(super::secrets::CaptureTrafficSecrets);
    match &shared.ticketer {
        Some(t) => config.ticketer = t.clone(),
        None if settings.session_cache == 0 => config.send_tls13_tickets = 0,
        // TLS 1.3 resumes through tickets only: without a ticketer they name entries of the session cache.
        None => {}
    }
    Ok(Arc::new(config))
}
