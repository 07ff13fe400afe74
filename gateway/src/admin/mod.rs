//! The operator's endpoint: `GET /metrics` (Prometheus text), `/healthz` (the process answers) and `/readyz`
//! (listeners bound and not draining; 503 otherwise), on its own address (`admin.bind`).
//!
//! Owns: the admin listener's thread and its tiny HTTP/1.1 server (one request per connection, bounded head,
//! timeouts) and the choice of answer ([`answer`], sans-IO). Does not own: the metrics (`crate::metrics`) or the
//! process state (`crate::runtime::process`).
//!
//! A blocking thread of its own, not a worker task: a scrape sums every worker's cells, and no worker should spend
//! its loop on it. Requests are served one at a time with short timeouts; the endpoint is for a scraper and an
//! orchestrator's probes, not for the public.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::expose::{ProcessInfo, render};
use crate::runtime::process::ProcessState;
use crate::worker::IO_BUFFER_SIZE;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long one admin client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// An answer: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

/// What the endpoint answers to `method` and `target` (sans-IO).
pub(crate) fn answer(method: &str, target: &str, process: &ProcessState) -> Answer {
    let text = |status, body: &str| Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.to_owned(),
    };
    let path = target.split('?').next().unwrap_or(target);
    if method != "GET" && method != "HEAD" {
        return text(405, "only GET\n");
    }
    match path {
        "/metrics" => {
            let proc_figures = ProcessInfo::read_proc();
            Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: render(
                    &process.metrics.workers(),
                    &ProcessInfo {
                        version: env!("CARGO_PKG_VERSION"),
                        git: option_env!("RINGWAY_GIT").unwrap_or("unknown"),
                        config_generation: process.config_generation(),
                        last_reload_ok: process.last_reload_ok(),
                        draining: process.draining(),
                        buffer_bytes: IO_BUFFER_SIZE,
                        resident_bytes: proc_figures.0,
                        open_fds: proc_figures.1,
                        servers_up: {
                            let loaded = process.loaded();
                            loaded
                                .health
                                .states(&loaded.config)
                                .map(|(pool, addr, up)| (pool.to_owned(), addr.to_string(), up))
                                .collect()
                        },
                    },
                ),
            }
        }
        "/healthz" => text(200, "ok\n"),
        "/readyz" if process.draining() => text(503, "draining\n"),
        "/readyz" if process.ready() => text(200, "ready\n"),
        "/readyz" => text(503, "starting\n"),
        _ => text(404, "not found: /metrics, /healthz, /readyz\n"),
    }
}

/// Serves `listener` on a thread of its own until the process exits.
pub(crate) fn spawn(listener: TcpListener, process: Arc<ProcessState>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ringway-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => serve(s, &process),
                    Err(e) => {
                        tracing::warn!(error = %e, "admin endpoint: accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map(|_| ())
}

fn serve(mut stream: TcpStream, process: &ProcessState) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.len() > MAX_HEAD {
            let _ = write_answer(
                &mut stream,
                &Answer {
                    status: 431,
                    content_type: "text/plain",
                    body: "request head too large\n".to_owned(),
                },
                false,
            );
            return;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let answer = match request.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {
            let method = request.method.unwrap_or("");
            let target = request.path.unwrap_or("/");
            let a = answer(method, target, process);
            let _ = write_answer(&mut stream, &a, method == "HEAD");
            return;
        }
        _ => Answer {
            status: 400,
            content_type: "text/plain",
            body: "bad request\n".to_owned(),
        },
    };
    let _ = write_answer(&mut stream, &answer, false);
}

fn write_answer(stream: &mut TcpStream, a: &Answer, head_only: bool) -> std::io::Result<()> {
    let reason = match a.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        a.status,
        a.content_type,
        a.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(a.body.as_bytes());
    }
    stream.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process() -> ProcessState {
        let config = ringway_config::parse(
            "listeners: [{name: main, bind: '127.0.0.1:0'}]\nroutes: [{path: /, echo: true}]\n",
            "test.yaml",
        )
        .expect("config");
        ProcessState::new(crate::runtime::process::Loaded {
            health: Arc::new(crate::upstream::health::HealthBoard::new(&config, None)),
            limits: Arc::new(crate::limits::SharedLimits::new(&config, None)),
            config: Arc::new(config),
            upstream_tls: Vec::new(),
        })
    }

    #[test]
    fn readiness_follows_start_and_drain_and_health_is_always_ok() {
        let process = process();
        assert_eq!(answer("GET", "/readyz", &process).status, 503);
        process.set_ready();
        assert_eq!(answer("GET", "/readyz", &process).status, 200);
        assert!(process.start_drain());
        assert!(
            !process.start_drain(),
            "a second signal does not start another drain"
        );
        assert_eq!(answer("GET", "/readyz", &process).status, 503);
        assert_eq!(answer("GET", "/healthz", &process).status, 200);
    }

    #[test]
    fn metrics_unknown_paths_and_methods() {
        let process = process();
        let m = answer("GET", "/metrics?x=1", &process);
        assert_eq!(m.status, 200);
        assert!(m.body.contains("ringway_build_info{version="));
        assert_eq!(answer("GET", "/nope", &process).status, 404);
        assert_eq!(answer("POST", "/metrics", &process).status, 405);
    }
}
