//! Reloading the route file (`SIGHUP`) while WebSockets are live: they keep echoing on the config they started
//! with, new connections see the new routes, a broken file keeps the running config, and `ringway reload` finds the
//! process.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

fn config_to(upstream: SocketAddr) -> String {
    format!(
        "listeners:\n  - name: test\n    bind: 127.0.0.1:0\nlimits:\n  handshake_timeout: 2s\n  close_timeout: 1s\n\
         upstreams:\n  up:\n    servers: [{upstream}]\n    connect_timeout: 1s\n\
         routes:\n  - path: /\n    upstream: up\n"
    )
}

fn echo_once(ws: &mut WsClient, text: &str) {
    ws.send_text(text);
    let f = ws.recv_within(Duration::from_secs(3)).expect("an echo");
    assert_eq!(f.payload, text.as_bytes());
}

/// Waits until a new WebSocket lands on `upstream` (the reload reached the worker).
fn wait_routed_to(gw: &Gateway, upstream: &ScriptedUpstream) {
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let before = upstream.requests.lock().expect("requests").len();
        let mut ws = WsClient::connect(gw.addr, "/probe");
        echo_once(&mut ws, "probe");
        if upstream.requests.lock().expect("requests").len() > before {
            return;
        }
        assert!(
            Instant::now() < end,
            "new connections never reached the new upstream"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn live_websockets_survive_reloads_and_new_ones_follow_the_new_routes() {
    let a = ScriptedUpstream::echo();
    let b = ScriptedUpstream::echo();
    let gw = Gateway::start_logged(&config_to(a.addr), "info");
    let mut old: Vec<WsClient> = (0..20).map(|_| WsClient::connect(gw.addr, "/")).collect();
    for (i, ws) in old.iter_mut().enumerate() {
        echo_once(ws, &format!("before {i}"));
    }
    assert_eq!(a.requests.lock().expect("requests").len(), 20);

    std::fs::write(gw.config_path(), config_to(b.addr)).expect("rewrite");
    gw.signal("HUP");
    wait_routed_to(&gw, &b);
    // The established ones still run through their connections to `a`, untouched (no new upgrade reaches `a`).
    let on_a = a.requests.lock().expect("requests").len();
    for (i, ws) in old.iter_mut().enumerate() {
        echo_once(ws, &format!("after {i}"));
    }
    assert_eq!(a.requests.lock().expect("requests").len(), on_a);

    // A broken file: the running config stays (new connections still go to `b`) and the log says where.
    std::fs::write(
        gw.config_path(),
        "listeners:\n  - name: test\n    bind: [oops\n",
    )
    .expect("rewrite");
    gw.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    wait_routed_to(&gw, &b);
    for ws in &mut old {
        echo_once(ws, "still");
    }
    let log = gw.stop();
    assert!(log.contains("route file reloaded"), "{log}");
    assert!(
        log.contains("reload failed") && log.contains("ringway.yaml:3:"),
        "{log}"
    );
}

#[test]
fn a_reload_opens_added_listeners_and_closes_removed_ones_without_cutting_their_connections() {
    let up = ScriptedUpstream::echo();
    let gw = Gateway::start_logged(&config_to(up.addr), "info");
    // A free port outside the ephemeral range: the other tests' port-0 binds cannot take it between here and the
    // reload.
    let extra = (0..1000u16)
        .map(|i| {
            SocketAddr::from((
                [127, 0, 0, 1],
                20_000 + (std::process::id() as u16 % 5000) + i,
            ))
        })
        .find(|a| std::net::TcpListener::bind(a).is_ok())
        .expect("a free port");
    let with_extra = config_to(up.addr).replace(
        "limits:",
        &format!("  - name: extra\n    bind: {extra}\nlimits:"),
    );
    std::fs::write(gw.config_path(), &with_extra).expect("rewrite");
    gw.signal("HUP");
    let end = Instant::now() + Duration::from_secs(3);
    while std::net::TcpStream::connect(extra).is_err() {
        assert!(Instant::now() < end, "the added listener never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut on_extra = WsClient::connect(extra, "/");
    echo_once(&mut on_extra, "through the added listener");
    let mut on_main = WsClient::connect(gw.addr, "/");
    echo_once(&mut on_main, "through the first listener");

    std::fs::write(gw.config_path(), config_to(up.addr)).expect("rewrite");
    gw.signal("HUP");
    let end = Instant::now() + Duration::from_secs(3);
    while std::net::TcpStream::connect(extra).is_ok() {
        assert!(Instant::now() < end, "the removed listener kept accepting");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its WebSocket was not cut, and the listener that stayed still serves.
    echo_once(&mut on_extra, "still here");
    echo_once(&mut on_main, "and here");
    let mut fresh = WsClient::connect(gw.addr, "/");
    echo_once(&mut fresh, "new");
    let log = gw.stop();
    assert!(log.contains("listener added by the reload"), "{log}");
    assert!(
        log.contains("listener removed or changed by the reload"),
        "{log}"
    );
}

#[test]
fn echoing_clients_see_no_error_through_twenty_reloads() {
    let a = ScriptedUpstream::echo();
    let b = ScriptedUpstream::echo();
    let gw = Gateway::start(&config_to(a.addr));
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let (stop, echoed, addr) = (stop.clone(), echoed.clone(), gw.addr);
            std::thread::spawn(move || {
                let mut ws = WsClient::connect(addr, "/");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    echo_once(&mut ws, &format!("client {i} message {n}"));
                    n += 1;
                    echoed.fetch_add(1, Ordering::Relaxed);
                }
                ws.send(true, 0x8, &close_payload(1000, ""));
                let close = ws
                    .recv_within(Duration::from_secs(3))
                    .expect("close answer");
                assert_eq!(close.close_code(), Some(1000));
            })
        })
        .collect();
    for round in 0..20 {
        let to = if round % 2 == 0 { b.addr } else { a.addr };
        std::fs::write(gw.config_path(), config_to(to)).expect("rewrite");
        gw.signal("HUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join()
            .expect("a client failed: error, mismatch or unexpected close");
    }
    assert!(echoed.load(Ordering::Relaxed) > 1000);
}

#[test]
fn ringway_reload_signals_the_process_running_that_file() {
    let a = ScriptedUpstream::echo();
    let b = ScriptedUpstream::echo();
    let gw = Gateway::start(&config_to(a.addr));
    std::fs::write(gw.config_path(), config_to(b.addr)).expect("rewrite");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("reload")
        .arg("--config")
        .arg(gw.config_path())
        .output()
        .expect("run ringway reload");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&gw.pid().to_string()));
    wait_routed_to(&gw, &b);
    // Nobody runs this file: an error, not silence.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["reload", "--config", "/nonexistent/ringway.yaml"])
        .output()
        .expect("run ringway reload");
    assert!(!out.status.success());
}
