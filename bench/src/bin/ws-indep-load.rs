//! An independent WebSocket load client for the peers bench: tokio-tungstenite instead of `ringway-load`, so that a
//! figure does not rest on our own client alone (a bench whose only client is ours can flatter us).
//!
//! Closed loop: `--conns` connections, each sends one binary message of `--size` bytes, waits for its echo, checks
//! it byte for byte, repeats; counts echoes during `--duration` after `--warmup`, then prints one JSON line:
//! `{"msgs_per_sec":..,"messages":..,"errors":..,"mismatches":..,"connect_failures":..}`. `wss://` URLs verify the
//! server against `--ca` (PEM). tokio is fine here: this is a dev tool, never part of the gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, connect_async_tls_with_config};

struct Args {
    url: String,
    conns: usize,
    size: usize,
    duration: Duration,
    warmup: Duration,
    ca: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        conns: 100,
        size: 64,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        ca: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--conns" => a.conns = value()?.parse().map_err(|e| format!("--conns: {e}"))?,
            "--size" => {
                let v = value()?;
                a.size = match v.strip_suffix("KiB") {
                    Some(k) => k.parse::<usize>().map_err(|e| format!("--size: {e}"))? * 1024,
                    None => v.parse().map_err(|e| format!("--size: {e}"))?,
                }
            }
            "--duration" => a.duration = secs(&value()?)?,
            "--warmup" => a.warmup = secs(&value()?)?,
            "--ca" => a.ca = Some(value()?),
            // Accepted for the bench driver's command line (it always runs one thread and prints JSON).
            "--json" | "--quiet" => {}
            "--threads" => {
                value()?;
            }
            url if !url.starts_with('-') => a.url = url.to_owned(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.url.is_empty() {
        return Err("usage: ws-indep-load [--conns N] [--size B|NKiB] [--duration S] [--warmup S] [--ca PEM] URL".into());
    }
    Ok(a)
}

fn secs(text: &str) -> Result<Duration, String> {
    text.trim_end_matches('s')
        .parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| format!("`{text}`: {e}"))
}

fn connector(ca: Option<&str>) -> Result<Option<Connector>, String> {
    let Some(ca) = ca else { return Ok(None) };
    let pem = std::fs::read(ca).map_err(|e| format!("{ca}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem)? {
        roots.add(cert).map_err(|e| format!("{ca}: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(Connector::Rustls(Arc::new(config))))
}

fn rustls_pemfile_certs(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

#[derive(Default)]
struct Counters {
    messages: AtomicU64,
    errors: AtomicU64,
    mismatches: AtomicU64,
    connect_failures: AtomicU64,
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ws-indep-load: {e}");
            std::process::exit(2);
        }
    };
    // One thread, as ringway-load runs in the bench (the load side has one core).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ws-indep-load: {e}");
            std::process::exit(2);
        }
    };
    let code = rt.block_on(run(args));
    std::process::exit(code);
}

async fn run(a: Args) -> i32 {
    let connector = match connector(a.ca.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ws-indep-load: {e}");
            return 2;
        }
    };
    let counters = Arc::new(Counters::default());
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let local = tokio::task::LocalSet::new();
    let payload: Arc<Vec<u8>> = Arc::new((0..a.size).map(|i| (i * 7 + 3) as u8).collect());
    for _ in 0..a.conns {
        let (url, connector, c, counting, stop, payload) = (
            a.url.clone(),
            connector.clone(),
            counters.clone(),
            counting.clone(),
            stop.clone(),
            payload.clone(),
        );
        local.spawn_local(async move {
            let ws = match connect_async_tls_with_config(url.as_str(), None, true, connector).await
            {
                Ok((ws, _)) => ws,
                Err(_) => {
                    c.connect_failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let (mut tx, mut rx) = ws.split();
            while !stop.load(Ordering::Relaxed) {
                if tx.send(Message::binary(payload.to_vec())).await.is_err() {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                loop {
                    match rx.next().await {
                        Some(Ok(Message::Binary(b))) => {
                            if b.as_ref() != payload.as_slice() {
                                c.mismatches.fetch_add(1, Ordering::Relaxed);
                            }
                            if counting.load(Ordering::Relaxed) {
                                c.messages.fetch_add(1, Ordering::Relaxed);
                            }
                            break;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        _ => {
                            c.errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Message::Close(None)).await;
        });
    }
    let window = local
        .run_until(async {
            tokio::time::sleep(a.warmup).await;
            counting.store(true, Ordering::Relaxed);
            let started = Instant::now();
            tokio::time::sleep(a.duration).await;
            counting.store(false, Ordering::Relaxed);
            let window = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            window
        })
        .await;
    let messages = counters.messages.load(Ordering::Relaxed);
    let (errors, mismatches, failures) = (
        counters.errors.load(Ordering::Relaxed),
        counters.mismatches.load(Ordering::Relaxed),
        counters.connect_failures.load(Ordering::Relaxed),
    );
    println!(
        "{{\"msgs_per_sec\":{:.1},\"messages\":{messages},\"errors\":{errors},\"mismatches\":{mismatches},\"connect_failures\":{failures}}}",
        messages as f64 / window.as_secs_f64()
    );
    i32::from(errors + mismatches + failures > 0)
}
