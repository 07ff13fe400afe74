//! A real browser through the gateway: headless Chromium (the Debian `chromium` package; `test.sh` installs it),
//! driven over the DevTools protocol, loads a page through the gateway (plain HTTP proxied to a test upstream) and
//! runs the browser's own WebSocket API against the gateway: open, text and binary echoes of 0 B to 1 MiB through
//! the relay to an echo upstream, and a clean close with 1000; once over `http://` + `ws://` and once over
//! `https://` + `wss://` (a certificate made at test time; the browser is told to accept it).
//!
//! Without a browser the test fails (it does not skip): CI must run it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Gateway, ScriptedUpstream, WsClient, read_head, status_of};

const PAGE: &str = include_str!("browser/page.html");

/// Headless Chromium with a DevTools port; killed (with its helpers) on drop.
struct Browser {
    child: Child,
    devtools: SocketAddr,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let binary = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .expect(
                "no Chromium found: install the Debian package `chromium` (./test.sh does), \
                 this test does not skip",
            );
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--ignore-certificate-errors",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ws://") {
                    let _ = tx.send(url.split('/').next().unwrap_or("").to_owned());
                }
            }
        });
        let hostport = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium did not print its DevTools address within 30 s");
        Browser {
            child,
            devtools: hostport.parse().expect("DevTools address"),
            _profile: profile,
        }
    }

    /// A DevTools session with the browser's page.
    fn page(&self) -> Cdp {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = http_get(self.devtools, "/json/list");
            let targets: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
            let page = targets.as_array().and_then(|t| {
                t.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            });
            if let Some(url) = page {
                let path = url
                    .strip_prefix("ws://")
                    .and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned()))
                    .expect("a ws:// DevTools URL");
                return Cdp {
                    ws: WsClient::connect(self.devtools, &path),
                    next_id: 1,
                };
            }
            assert!(Instant::now() < deadline, "no page target: {list}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium's helper processes share its process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a plain HTTP GET (Connection: close).
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = String::new();
    let _ = s.read_to_string(&mut all);
    all.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// A DevTools protocol session over the harness's WebSocket client.
struct Cdp {
    ws: WsClient,
    next_id: u64,
}

impl Cdp {
    /// Sends a command and returns its `result` (events in between are skipped).
    fn call(
        &mut self,
        method: &str,
        params: serde_json::Value,
        timeout: Duration,
    ) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.ws.send_text(&msg.to_string());
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{method}: no answer within {timeout:?}");
            let Some(frame) = self.ws.recv_within(left) else {
                panic!("{method}: DevTools connection ended or timed out")
            };
            let value: serde_json::Value = match serde_json::from_slice(&frame.payload) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, expression: &str, timeout: Duration) -> serde_json::Value {
        let result = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            timeout,
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }
}

/// A plain HTTP upstream that serves the test page for every request. Stopped on drop.
struct PageServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl PageServer {
    fn start() -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    while let Some(head) = read_head(&mut conn) {
                        let found = head.starts_with("GET /page ");
                        let (status, body) = if found {
                            ("200 OK", PAGE)
                        } else {
                            ("404 Not Found", "not here\n")
                        };
                        let answer = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        PageServer { addr, stop }
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// The gateway with a plain and a TLS listener, `/page` proxied to the page server and `/echo` relayed to an echo
/// upstream. Returns it with the two listener addresses.
fn gateway(
    page: &PageServer,
    echo: &ScriptedUpstream,
    certs: &std::path::Path,
) -> (Gateway, SocketAddr) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (certs.join("cert.pem"), certs.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    // The TLS listener's port is read from the start line of the second listener.
    let tls_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let yaml = format!(
        "listeners:\n  - name: plain\n    bind: 127.0.0.1:0\n  - name: tls\n    bind: 127.0.0.1:{tls_port}\n    tls:\n      \
         certificates: [{{ cert: {}, key: {} }}]\n\
         upstreams:\n  page:\n    servers: [{}]\n  echo:\n    servers: [{}]\n\
         routes:\n  - path: /echo\n    upstream: echo\n  - path: /page\n    upstream: page\n",
        cert_path.display(),
        key_path.display(),
        page.addr,
        echo.addr
    );
    let gw = Gateway::start(&yaml);
    let tls = SocketAddr::from(([127, 0, 0, 1], tls_port));
    (gw, tls)
}

#[derive(Clone, Copy, Debug)]
enum Scheme {
    Plain,
    Tls,
}

fn run_browser_suite(scheme: Scheme) {
    let page = PageServer::start();
    let echo = ScriptedUpstream::echo();
    let certs = tempfile::tempdir().unwrap();
    let (gw, tls_addr) = gateway(&page, &echo, certs.path());
    let (page_url, ws_url) = match scheme {
        Scheme::Plain => (
            format!("http://localhost:{}/page", gw.addr.port()),
            format!("ws://localhost:{}/echo", gw.addr.port()),
        ),
        Scheme::Tls => (
            format!("https://localhost:{}/page", tls_addr.port()),
            format!("wss://localhost:{}/echo", tls_addr.port()),
        ),
    };
    // The page is really served through the gateway.
    if let Scheme::Plain = scheme {
        let head = common::http_request(
            gw.addr,
            "GET /page HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status_of(&head), 200, "{head}");
    }
    let browser = Browser::start();
    let mut cdp = browser.page();
    cdp.call(
        "Page.navigate",
        serde_json::json!({ "url": page_url }),
        Duration::from_secs(10),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while cdp.eval(
        "typeof runSuite === 'function' && document.readyState === 'complete'",
        Duration::from_secs(5),
    ) != serde_json::Value::Bool(true)
    {
        assert!(
            Instant::now() < deadline,
            "{page_url} did not load in the browser"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = cdp.eval(&format!("runSuite('{ws_url}')"), Duration::from_secs(60));
    let report = report
        .as_str()
        .expect("the suite returns its report")
        .to_owned();
    let lines: Vec<&str> = report.lines().collect();
    // open + (text, binary) x 7 sizes + close
    assert_eq!(lines.len(), 16, "{scheme:?}:\n{report}");
    assert!(
        lines.iter().all(|l| l.starts_with("ok ")),
        "{scheme:?}:\n{report}"
    );
    drop(browser);
    let log = gw.stop();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_browser_echoes_through_the_gateway_over_ws() {
    run_browser_suite(Scheme::Plain);
}

#[test]
fn a_browser_echoes_through_the_gateway_over_wss() {
    run_browser_suite(Scheme::Tls);
}
