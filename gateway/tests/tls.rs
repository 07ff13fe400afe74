//! TLS listeners against the real binary: wss/https through the gateway with a CA made at test time, SNI
//! certificate choice from SANs, unknown names, TLS 1.2/1.3-only clients, resumption, mTLS and the forwarded
//! identity header, a trickled ClientHello, garbage, plain HTTP on the TLS port, certificate reload while a wss
//! connection keeps echoing, the https redirect, and `ringway check` on broken certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    CLIENT_ACCEPT, CLIENT_KEY, Gateway, ScriptedUpstream, encode, header_of, read_frame, read_head,
    status_of,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};

/// A certificate authority made for one test.
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = p.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// A leaf for `names`, as (cert PEM, key PEM, cert DER).
    fn leaf(&self, names: &[&str], client: bool) -> (String, String, Vec<u8>) {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("x"));
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }
}

/// Writes a leaf pair into `dir` as `NAME.pem` / `NAME.key`; returns (cert path, key path, cert DER).
fn write_pair(
    dir: &Path,
    name: &str,
    pair: (String, String, Vec<u8>),
) -> (PathBuf, PathBuf, Vec<u8>) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, pair.0).unwrap();
    std::fs::write(&key, pair.1).unwrap();
    (cert, key, pair.2)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client_config(
    roots: RootCertStore,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> ClientConfig {
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    c
}

fn all_versions() -> &'static [&'static rustls::SupportedProtocolVersion] {
    rustls::ALL_VERSIONS
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the handshake; `Err` with rustls' error if it fails.
fn tls_connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
) -> Result<Tls, rustls::Error> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = ClientConnection::new(
        config.clone(),
        ServerName::try_from(name.to_owned()).unwrap(),
    )
    .unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            return Err(
                match e
                    .into_inner()
                    .and_then(|inner| inner.downcast::<rustls::Error>().ok())
                {
                    Some(e) => *e,
                    None => rustls::Error::General("i/o error during the handshake".into()),
                },
            );
        }
    }
    Ok(tls)
}

/// Opens a WebSocket over `tls` (upgrade to `path`, extra header lines), returning the 101 head.
fn upgrade(tls: &mut Tls, path: &str, extra: &str) -> String {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {CLIENT_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    tls.write_all(req.as_bytes()).unwrap();
    let head = read_head(tls).expect("an answer to the upgrade");
    assert_eq!(status_of(&head), 101, "{head}");
    assert_eq!(
        header_of(&head, "sec-websocket-accept"),
        Some(CLIENT_ACCEPT)
    );
    head
}

/// Sends one masked message and checks it comes back unchanged.
fn echo(tls: &mut Tls, opcode: u8, payload: &[u8]) {
    tls.write_all(&encode(true, false, opcode, payload, Some([1, 2, 3, 4])))
        .unwrap();
    let frame = read_frame(tls).expect("an echo");
    assert_eq!(frame.opcode, opcode);
    assert!(
        frame.payload == payload,
        "echo differs ({} bytes)",
        payload.len()
    );
}

fn tls_yaml(listener_tls: &str, extra_routes: &str) -> String {
    format!(
        "workers: 2\nlisteners:\n  - name: tls\n    bind: 127.0.0.1:0\n    tls:\n{listener_tls}\nlimits:\n  handshake_timeout: 2s\n\
         routes:\n{extra_routes}  - path: /\n    echo: true\n"
    )
}

fn certs_block(pairs: &[(&Path, &Path)], extra: &str) -> String {
    let mut s = String::from("      certificates:\n");
    for (c, k) in pairs {
        s.push_str(&format!(
            "        - cert: {}\n          key: {}\n",
            c.display(),
            k.display()
        ));
    }
    s.push_str(extra);
    s
}

#[test]
fn wss_and_https_through_the_gateway_with_a_verified_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Ringway test CA");
    let (cert, key, _) = write_pair(dir.path(), "localhost", ca.leaf(&["localhost"], false));
    let upstream = ScriptedUpstream::echo();
    let yaml = format!(
        "{}upstreams:\n  up:\n    servers: [{}]\n",
        tls_yaml(
            &certs_block(&[(&cert, &key)], ""),
            "  - path: /relay\n    upstream: up\n"
        ),
        upstream.addr
    );
    let gw = Gateway::start(&yaml);
    let config = Arc::new(client_config(ca.roots(), all_versions()));

    // The built-in echo, every size class of frame header, text and binary.
    let mut tls = tls_connect(gw.addr, &config, "localhost").expect("handshake");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    upgrade(&mut tls, "/echo", "");
    for size in [0, 1, 125, 126, 65535, 65536, 300_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        echo(&mut tls, 2, &payload);
    }
    echo(&mut tls, 1, "héllo wörld".as_bytes());

    // Through the frame relay to a real upstream: the upstream is told the client came over https.
    let mut tls = tls_connect(gw.addr, &config, "localhost").expect("handshake");
    upgrade(&mut tls, "/relay", "");
    for size in [5, 70_000] {
        echo(&mut tls, 2, &vec![7u8; size]);
    }
    let seen = upstream.received();
    assert_eq!(
        header_of(&seen[0], "x-forwarded-proto"),
        Some("https"),
        "{}",
        seen[0]
    );

    // Plain HTTP over TLS on the same listener.
    let mut tls = tls_connect(gw.addr, &config, "localhost").expect("handshake");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let head = read_head(&mut tls).unwrap();
    assert_eq!(status_of(&head), 200, "{head}");
}

#[test]
fn sni_picks_the_certificate_whose_sans_name_it_and_unknown_names_get_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Ringway test CA");
    let (c1, k1, d1) = write_pair(dir.path(), "default", ca.leaf(&["default.test"], false));
    let (c2, k2, d2) = write_pair(dir.path(), "api", ca.leaf(&["api.example.test"], false));
    let (c3, k3, d3) = write_pair(dir.path(), "wild", ca.leaf(&["*.example.test"], false));
    let gw = Gateway::start(&tls_yaml(
        &certs_block(&[(&c1, &k1), (&c2, &k2), (&c3, &k3)], ""),
        "",
    ));
    let served = |name: &str| -> Vec<u8> {
        // Verification is by name, so a client asking for an unknown name cannot verify the default: accept
        // whatever is served and compare it.
        let config = Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(all_versions())
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything))
                .with_no_client_auth(),
        );
        let tls = tls_connect(gw.addr, &config, name).expect("handshake");
        tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
    };
    assert_eq!(served("api.example.test"), d2);
    assert_eq!(served("chat.example.test"), d3);
    assert_eq!(served("default.test"), d1);
    assert_eq!(served("unknown.test"), d1, "unknown names get the default");
    assert_eq!(
        served("127.0.0.1"),
        d1,
        "no SNI (an IP address) gets the default"
    );
}

#[test]
fn unknown_names_can_be_refused_with_unrecognized_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Ringway test CA");
    let (c, k, _) = write_pair(dir.path(), "a", ca.leaf(&["a.test"], false));
    let gw = Gateway::start_logged(
        &tls_yaml(&certs_block(&[(&c, &k)], "      unknown_sni: refuse\n"), ""),
        "info",
    );
    let config = Arc::new(client_config(ca.roots(), all_versions()));
    let Err(err) = tls_connect(gw.addr, &config, "b.test") else {
        panic!("an unknown name was served")
    };
    assert_eq!(
        err,
        rustls::Error::AlertReceived(rustls::AlertDescription::UnrecognisedName),
        "{err}"
    );
    tls_connect(gw.addr, &config, "a.test").expect("a known name is served");
    let log = gw.stop();
    assert!(log.contains("no certificate for this server name"), "{log}");
}

#[test]
fn a_client_refused_at_accept_gets_a_tls_alert_not_plain_http() {
    // Refused before its handshake (here the connection limit; the per-client cap answers the same way), a TLS
    // client must be told in TLS: an HTTP 503 in plain text would read as a corrupt record.
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Ringway test CA");
    let (c, k, _) = write_pair(dir.path(), "a", ca.leaf(&["a.test"], false));
    let yaml = tls_yaml(&certs_block(&[(&c, &k)], ""), "")
        .replace("workers: 2", "workers: 1")
        .replace(
            "  handshake_timeout: 2s\n",
            "  handshake_timeout: 2s\n  max_connections: 1\n",
        );
    let gw = Gateway::start(&yaml);
    let config = Arc::new(client_config(ca.roots(), all_versions()));
    let held = tls_connect(gw.addr, &config, "a.test").expect("the first connection is served");
    let Err(err) = tls_connect(gw.addr, &config, "a.test") else {
        panic!("a connection over the limit was served")
    };
    assert_eq!(
        err,
        rustls::Error::AlertReceived(rustls::AlertDescription::InternalError),
        "{err}"
    );
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut again = loop {
        match tls_connect(gw.addr, &config, "a.test") {
            Ok(t) => break t,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "never served again: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    upgrade(&mut again, "/", "");
    echo(&mut again, 0x1, b"served again");
}

#[test]
fn tls_1_2_and_1_3_clients_and_a_1_3_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Ringway test CA");
    let (c, k, _) = write_pair(dir.path(), "localhost", ca.leaf(&["localhost"], false));
    let gw = Gateway::start(&tls_yaml(&certs_block(&[(&c, &k)], ""), ""));
    // ALPN: the gateway speaks http/1.1 only; a client offering only h2 is refused, one offering nothing is served.
    let mut h2_only = client_config(ca.roots(), all_versions());
    h2_only.alpn_protocols = vec![b"h2".to_vec()];
    let Err(err) = tls_connect(gw.addr, &Arc::new(h2_only), "localhost") else {
        panic!("an h2-only client was served")
    };
    assert_eq!(
        err,
        rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol),
        "{err}"
    );
    let mut no_alpn = client_config(ca.roots(), all_versions());
    no_alpn.alpn_protocols.clear();
    tls_connect(gw.addr, &Arc::new(no_alpn), "localhost").expect("a client without ALPN");
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = Arc::new(client_config(ca.roots(), &[version]));
        let mut tls = tls_connect(gw.addr, &config, "localhost").expect("handshake");
        assert_eq!(tls.conn.protocol_version(), Some(expected));
        upgrade(&mut tls, "/echo", "");
        echo(&mut tls, 1, b"over this version");
    }
    drop(gw);

    let gw = Gateway::start(&tls_yaml(
        &certs_block(&[(&c, &k)], "      min_version: \"1.3\"\n"),
        "",
    ));
    let old = Arc::new(client_config(ca.roots(), &[&rustls::version::TLS12]));
    let Err(err) = tls_connect(gw.addr, &old, "localhost") else {
        panic!("a TLS 1.2 client was served under min_version 1.3")
    };
    assert_eq!(
        err,
        rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion),
        "{err}"
    );
}

#[test]
fn sessions_resume_by_ticket_across_workers_and_by_the_per_worker_cache() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Ringway test CA");
    let (c, k, _) = write_pair(dir.path(), "localhost", ca.leaf(&["localhost"], false));
    let resumes = |gw: &Gateway, version: &'static rustls::SupportedProtocolVersion| {
        // One client config = one client session cache, as a browser has.
        let config = Arc::new(client_config(ca.roots(), &[version]));
        let mut kinds = Vec::new();
        for _ in 0..4 {
            let mut tls = tls_connect(gw.addr, &config, "localhost").expect("handshake");
            // TLS 1.3 tickets arrive after the handshake: read an answer so the client has them.
            tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            read_head(&mut tls).unwrap();
            kinds.push(tls.conn.handshake_kind());
        }
        kinds
    };
    // Tickets (shared keys): every later connection resumes, whichever worker takes it.
    let gw = Gateway::start(&tls_yaml(&certs_block(&[(&c, &k)], ""), ""));
    let kinds = resumes(&gw, &rustls::version::TLS13);
    assert_eq!(kinds[0], Some(HandshakeKind::Full));
    assert!(
        kinds[1..]
            .iter()
            .all(|k| *k == Some(HandshakeKind::Resumed)),
        "{kinds:?}"
    );
    drop(gw);

    // No tickets: TLS 1.2 resumes by session ID from the worker's cache (one worker, so the cache is hit).
    let yaml = tls_yaml(
        &certs_block(&[(&c, &k)], "      session_tickets: false\n"),
        "",
    )
    .replace("workers: 2", "workers: 1");
    let gw = Gateway::start(&yaml);
    let kinds = resumes(&gw, &rustls::version::TLS12);
    assert!(
        kinds[1..]
            .iter()
            .all(|k| *k == Some(HandshakeKind::Resumed)),
        "{kinds:?}"
    );
    drop(gw);

    // Both off: nothing resumes.
    let yaml = tls_yaml(
        &certs_block(
            &[(&c, &k)],
            "      session_tickets: false\n      session_cache: 0\n",
        ),
        "",
    );
    let gw = Gateway::start(&yaml);
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let kinds = resumes(&gw, version);
        assert!(
            kinds.iter().all(|k| *k == Some(HandshakeKind::Full)),
            "{kinds:?}"
        );
    }
}

#[test]
fn client_certificates_are_verified_and_the_identity_forwarded_never_the_clients_own_header() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Ringway test CA");
    let client_ca = TestCa::new("Ringway client CA");
    let (c, k, _) = write_pair(dir.path(), "localhost", ca.leaf(&["localhost"], false));
    let ca_path = dir.path().join("clients.pem");
    std::fs::write(&ca_path, client_ca.cert.pem()).unwrap();
    let upstream = ScriptedUpstream::echo();
    let yaml = |mode: &str| {
        format!(
            "{}upstreams:\n  up:\n    servers: [{}]\n",
            tls_yaml(
                &certs_block(
                    &[(&c, &k)],
                    &format!(
                        "      client_auth:\n        ca: {}\n        mode: {mode}\n",
                        ca_path.display()
                    )
                ),
                "  - path: /relay\n    upstream: up\n    client_cert_header: X-Client-Cert\n"
            ),
            upstream.addr
        )
    };
    let with_cert = |cert: (String, String, Vec<u8>)| {
        let chain = vec![CertificateDer::from(cert.2)];
        let key = rustls_pki_types_key(&cert.1);
        let mut c = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(all_versions())
            .unwrap()
            .with_root_certificates(ca.roots())
            .with_client_auth_cert(chain, key)
            .unwrap();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    };
    let gw = Gateway::start(&yaml("required"));
    let alice = with_cert(client_ca.leaf(&["alice.example"], true));
    let mut tls = tls_connect(gw.addr, &alice, "localhost").expect("a verified client");
    upgrade(&mut tls, "/relay", "X-Client-Cert: subject=CN=admin\r\n");
    echo(&mut tls, 1, b"hi");
    let seen = upstream.received();
    let forwarded: Vec<&str> = seen[0]
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-client-cert:"))
        .collect();
    assert_eq!(forwarded.len(), 1, "{}", seen[0]);
    assert!(
        forwarded[0].contains("CN=alice.example") && forwarded[0].contains("dns=alice.example"),
        "{}",
        seen[0]
    );

    // No certificate, or one from another CA: refused during the handshake.
    let anonymous = Arc::new(client_config(ca.roots(), all_versions()));
    let mut refused = tls_connect(gw.addr, &anonymous, "localhost")
        .map(|mut t| {
            // TLS 1.3: the client learns of the refusal on its first read.
            let _ = t.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
            let mut b = [0u8; 1];
            t.read(&mut b).map(|n| n > 0).unwrap_or(false)
        })
        .unwrap_or(false);
    assert!(!refused, "a client without a certificate was served");
    let mallory = with_cert(TestCa::new("Other CA").leaf(&["mallory.example"], true));
    refused = tls_connect(gw.addr, &mallory, "localhost")
        .map(|mut t| {
            let _ = t.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
            let mut b = [0u8; 1];
            t.read(&mut b).map(|n| n > 0).unwrap_or(false)
        })
        .unwrap_or(false);
    assert!(!refused, "a certificate from an unknown CA was served");
    drop(gw);

    // Optional: no certificate is fine, and the client's own header still never reaches the upstream.
    let gw = Gateway::start(&yaml("optional"));
    let mut tls = tls_connect(gw.addr, &anonymous, "localhost").expect("handshake");
    upgrade(&mut tls, "/relay", "X-Client-Cert: subject=CN=admin\r\n");
    echo(&mut tls, 1, b"hi");
    let seen = upstream.received();
    let last = seen.last().unwrap();
    assert!(
        !last.to_ascii_lowercase().contains("x-client-cert"),
        "{last}"
    );
}

/// A PEM private key as DER.
fn rustls_pki_types_key(pem: &str) -> rustls::pki_types::PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// The bytes of a ClientHello for `name`.
fn client_hello(config: &Arc<ClientConfig>, name: &str) -> Vec<u8> {
    let mut conn = ClientConnection::new(
        config.clone(),
        ServerName::try_from(name.to_owned()).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

#[test]
fn a_client_hello_trickled_past_the_handshake_timeout_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Ringway test CA");
    let (c, k, _) = write_pair(dir.path(), "localhost", ca.leaf(&["localhost"], false));
    let gw = Gateway::start_logged(&tls_yaml(&certs_block(&[(&c, &k)], ""), ""), "info");
    let hello = client_hello(
        &Arc::new(client_config(ca.roots(), all_versions())),
        "localhost",
    );
    let mut tcp = TcpStream::connect(gw.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let start = Instant::now();
    let mut closed_at = None;
    for byte in hello.iter().take(60) {
        if tcp.write_all(&[*byte]).is_err() {
            closed_at = Some(start.elapsed());
            break;
        }
        let mut b = [0u8; 64];
        match tcp.read(&mut b) {
            Ok(0) => {
                closed_at = Some(start.elapsed());
                break;
            }
            Ok(_) => panic!("the gateway answered an incomplete ClientHello"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                closed_at = Some(start.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let closed_at = closed_at.expect("still open after 60 bytes at 10 bytes/s");
    assert!(
        closed_at >= Duration::from_millis(1800) && closed_at < Duration::from_secs(4),
        "closed after {closed_at:?} (handshake_timeout is 2s)"
    );
    let log = gw.stop();
    assert!(
        log.contains("TLS refused: handshake not completed in time"),
        "{log}"
    );
}

#[test]
fn garbage_gets_an_alert_and_plain_http_gets_400_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Ringway test CA");
    let (c, k, _) = write_pair(dir.path(), "localhost", ca.leaf(&["localhost"], false));
    let gw = Gateway::start_logged(&tls_yaml(&certs_block(&[(&c, &k)], ""), ""), "info");
    let config = Arc::new(client_config(ca.roots(), all_versions()));
    let mut live = tls_connect(gw.addr, &config, "localhost").unwrap();
    upgrade(&mut live, "/echo", "");

    for garbage in [
        // A ServerHello (type 2) where a ClientHello must be.
        &b"\x16\x03\x01\x00\x08\x02\x00\x00\x04\x03\x03\x00\x00"[..],
        &b"\x00\x01\x02\x03 not tls at all \xff\xfe"[..],
        &[0x16, 0x03, 0x03, 0xff, 0xff][..],
    ] {
        let mut tcp = TcpStream::connect(gw.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(garbage).unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        if garbage[0] == 0x16 && garbage[3] == 0xff {
            // A record header announcing more than a record may hold: refused as soon as it is seen.
            assert!(answer.is_empty() || answer[0] == 0x15, "{answer:?}");
        } else {
            assert_eq!(
                answer.first(),
                Some(&0x15),
                "an alert record, got {answer:?}"
            );
        }
    }

    let mut tcp = TcpStream::connect(gw.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(
        answer.contains("plain HTTP request was sent to an HTTPS port"),
        "{answer}"
    );

    echo(&mut live, 1, b"still here");
    let log = gw.stop();
    assert!(log.contains("TLS refused: handshake failed"), "{log}");
    assert!(log.contains("plain HTTP request on a TLS port"), "{log}");
}

#[test]
fn certificates_reload_on_sighup_while_a_wss_connection_keeps_echoing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Ringway test CA");
    let (c, k, first) = write_pair(dir.path(), "localhost", ca.leaf(&["localhost"], false));
    let gw = Gateway::start(&tls_yaml(&certs_block(&[(&c, &k)], ""), ""));
    let config = Arc::new(client_config(ca.roots(), all_versions()));
    let served = || {
        tls_connect(gw.addr, &config, "localhost")
            .unwrap()
            .conn
            .peer_certificates()
            .unwrap()[0]
            .as_ref()
            .to_vec()
    };
    let mut live = tls_connect(gw.addr, &config, "localhost").unwrap();
    upgrade(&mut live, "/echo", "");
    echo(&mut live, 1, b"before");
    assert_eq!(served(), first);

    let (_, _, second) = write_pair(dir.path(), "localhost", ca.leaf(&["localhost"], false));
    let hup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &gw.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while served() != second {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    echo(&mut live, 1, b"after the reload");

    // A broken file keeps the pair that works.
    std::fs::write(
        &k,
        "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(served(), second);
    echo(&mut live, 1, b"after a failed reload");
    let log = gw.stop();
    assert!(log.contains("certificate reload failed"), "{log}");
}

#[test]
fn a_plain_listener_can_redirect_to_https() {
    let gw = Gateway::start(
        "listeners:\n  - name: plain\n    bind: 127.0.0.1:0\n    redirect_https: 8443\nroutes:\n  - path: /\n    echo: true\n",
    );
    let answer = common::http_request(
        gw.addr,
        "GET /chat?room=1 HTTP/1.1\r\nHost: example.test:8080\r\n\r\n",
    );
    assert_eq!(status_of(&answer), 308, "{answer}");
    assert_eq!(
        header_of(&answer, "location"),
        Some("https://example.test:8443/chat?room=1")
    );
}

#[test]
fn check_reports_unusable_certificates_at_their_yaml_keys() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Ringway test CA");
    let (c, k, _) = write_pair(dir.path(), "good", ca.leaf(&["good.test"], false));
    let (other_c, _, _) = write_pair(dir.path(), "other", ca.leaf(&["other.test"], false));
    let expired = {
        let mut p = CertificateParams::new(vec!["old.test".to_owned()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = p.self_signed(&key).unwrap();
        write_pair(
            dir.path(),
            "expired",
            (cert.pem(), key.serialize_pem(), vec![]),
        )
    };
    let soon = {
        let mut p = CertificateParams::new(vec!["soon.test".to_owned()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(30);
        p.not_after = now + time::Duration::days(5);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = p.self_signed(&key).unwrap();
        write_pair(
            dir.path(),
            "soon",
            (cert.pem(), key.serialize_pem(), vec![]),
        )
    };
    let check = |pairs: &[(&Path, &Path)]| {
        let yaml = tls_yaml(&certs_block(pairs, ""), "");
        let file = dir.path().join("ringway.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
            .arg("check")
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            file,
        )
    };
    let missing = dir.path().join("missing.pem");
    let (code, err, file) = check(&[(&c, &k), (&missing, &k)]);
    assert_eq!(code, Some(1), "{err}");
    let f = file.display();
    assert!(
        err.contains(&format!(
            "{f}:9:17: listeners[0].tls.certificates[1].cert: cannot read {}",
            missing.display()
        )),
        "{err}"
    );
    let (code, err, _) = check(&[(&other_c, &k)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(":8:16: listeners[0].tls.certificates[0].key: ")
            && err.contains("does not belong"),
        "{err}"
    );
    let (code, err, _) = check(&[(&expired.0, &expired.1)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("listeners[0].tls.certificates[0].cert: ") && err.contains("expired"),
        "{err}"
    );
    let (code, err, _) = check(&[(&soon.0, &soon.1)]);
    assert_eq!(code, Some(0), "an expiring certificate is a warning: {err}");
    assert!(
        err.contains("warning: ") && err.contains("expires in 4 day(s)")
            || err.contains("expires in 5 day(s)"),
        "{err}"
    );
}

/// A verifier that accepts any server certificate (to look at what the gateway serves for unknown names).
#[derive(Debug)]
struct AcceptAnything;

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS WebSocket echo upstream on a loopback port serving `pair` (cert PEM, key PEM); also answers plain HTTP
/// `GET /plain` with `200 tls upstream`. Runs until the test process ends (threads are detached; the listener is
/// closed when the returned guard drops).
struct TlsUpstream {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn tls_upstream(pair: &(String, String, Vec<u8>)) -> TlsUpstream {
    use rustls::pki_types::PrivateKeyDer;
    let chain = vec![CertificateDer::from(pair.2.clone())];
    let key: PrivateKeyDer<'static> = rustls_pki_types_key(&pair.1);
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(all_versions())
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let Ok(tcp) = tcp else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = StreamOwned::new(conn, tcp);
                let Some(head) = read_head(&mut tls) else {
                    return;
                };
                if head.lines().next().is_some_and(|l| l.contains("/plain")) {
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\ntls upstream ok");
                    let _ = tls.flush();
                    return;
                }
                let key = header_of(&head, "sec-websocket-key")
                    .unwrap_or("")
                    .to_owned();
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {}\r\n\r\n",
                    common::accept_key(&key)
                );
                if tls.write_all(answer.as_bytes()).is_err() {
                    return;
                }
                while let Some(frame) = read_frame(&mut tls) {
                    let reply = encode(true, false, frame.opcode, &frame.payload, None);
                    if tls.write_all(&reply).is_err() || frame.opcode == 8 {
                        return;
                    }
                }
            });
        }
    });
    TlsUpstream { addr, stop }
}

#[test]
fn upstreams_over_tls_are_verified_and_a_bad_certificate_is_502() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Ringway upstream CA");
    let ca_path = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_path, ca.cert.pem()).unwrap();
    let good = tls_upstream(&ca.leaf(&["backend.test"], false));
    let stranger = tls_upstream(&TestCa::new("Unknown CA").leaf(&["backend.test"], false));
    let yaml = format!(
        "listeners:\n  - name: plain\n    bind: 127.0.0.1:0\nupstreams:\n  good:\n    servers: [\"wss://{}\"]\n    tls:\n      server_name: backend.test\n      ca: {ca}\n  \
         bad:\n    servers: [\"wss://{}\"]\n    tls:\n      server_name: backend.test\n      ca: {ca}\n\
         routes:\n  - path: /good\n    upstream: good\n  - path: /bad\n    upstream: bad\n",
        good.addr,
        stranger.addr,
        ca = ca_path.display()
    );
    let gw = Gateway::start_logged(&yaml, "info");
    // A WebSocket through the gateway to a TLS upstream.
    let mut ws = common::WsClient::connect(gw.addr, "/good");
    ws.send(true, 2, &[9u8; 70_000]);
    let frame = ws.recv().expect("echo");
    assert_eq!(frame.payload, vec![9u8; 70_000]);
    // Plain HTTP over the same upstream TLS.
    let answer = common::http_request(
        gw.addr,
        "GET /good/plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&answer), 200, "{answer}");
    // A certificate from a CA the pool does not trust: 502 on both paths, with the reason in the log.
    let refused = common::WsClient::connect_with(gw.addr, "/bad", &[])
        .err()
        .unwrap_or_default();
    assert_eq!(status_of(&refused), 502, "{refused}");
    let answer = common::http_request(
        gw.addr,
        "GET /bad/plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&answer), 502, "{answer}");
    let log = gw.stop();
    assert!(
        log.contains("upstream TLS failed") && log.contains("UnknownIssuer"),
        "{log}"
    );
}
