//! The `ringway` command line: `ringway check` on the config crate's fixtures, and the README quick start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn fixtures(kind: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/tests/fixtures")
        .join(kind)
}

#[test]
fn check_accepts_every_valid_fixture_and_prints_a_summary() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures("valid")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(": OK"), "{stdout}");
        assert!(stdout.contains("route"), "summary lists routes: {stdout}");
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} valid fixtures found");
}

#[test]
fn check_rejects_every_invalid_fixture_with_its_exact_message() {
    let dir = fixtures("invalid");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let expected = std::fs::read_to_string(path.with_extension("expected")).unwrap();
        let name = path.file_name().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
            .current_dir(&dir)
            .arg("check")
            .arg(name)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim_end(),
            expected.trim_end(),
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} invalid fixtures found");
}

#[test]
fn check_reports_a_missing_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["check", "/nonexistent/ringway.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ringway.yaml"));
}

#[test]
fn the_quickstart_config_serves_the_builtin_echo() {
    let quickstart =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/quickstart.yaml");
    let yaml = std::fs::read_to_string(quickstart).unwrap();
    assert!(yaml.contains("127.0.0.1:8080"), "README promises port 8080");
    // Same file on an ephemeral port, so the test never collides with a running gateway.
    let gw = Gateway::start(&yaml.replace("127.0.0.1:8080", "127.0.0.1:0"));
    let mut ws = WsClient::connect(gw.addr, "/echo");
    ws.send_text("hello ringway");
    let f = ws.recv().expect("echo");
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (TEXT, &b"hello ringway"[..])
    );
    ws.send(true, PING, b"p");
    assert_eq!(ws.recv().expect("pong").opcode, PONG);
    ws.send(true, CLOSE, &close_payload(1000, ""));
    assert_eq!(ws.recv().expect("close").close_code(), Some(1000));
    let head = http_request(
        gw.addr,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&head), 200, "{head}");
}

/// `--workers 0` is refused instead of silently becoming 1.
#[test]
fn zero_workers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.yaml");
    std::fs::write(
        &file,
        "listeners: [{name: t, bind: 127.0.0.1:0}]\nroutes: [{path: /, echo: true}]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["--workers", "0", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--workers") && err.contains("0"), "{err}");
}

/// Logs to a pipe (journald, a file) carry no colour codes, and the start line names the version and the config.
#[test]
fn logs_to_a_pipe_are_plain_text_with_a_start_line() {
    let gw = Gateway::start_logged(
        "listeners: [{name: t, bind: 127.0.0.1:0}]\nroutes: [{path: /, echo: true}]\n",
        "info",
    );
    let log = gw.stop();
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a piped log: {log:?}"
    );
    let start = log
        .lines()
        .find(|l| l.contains("ringway started"))
        .unwrap_or_else(|| panic!("no start line: {log}"));
    assert!(
        start.contains(&format!("version={}", env!("CARGO_PKG_VERSION")))
            && start.contains("config=")
            && start.contains("ringway.yaml"),
        "{start}"
    );
    assert_eq!(
        log.matches("ringway started").count(),
        1,
        "one start line: {log}"
    );
}

/// A second `ringway` on a port the first one listens on is refused (SO_REUSEPORT would otherwise let it take half
/// of the first one's connections without a word), unless `--takeover` asks for it (a binary upgrade).
#[test]
fn a_second_instance_on_a_taken_port_is_refused_unless_taking_over() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "listeners: [{{name: t, bind: \"127.0.0.1:{port}\"}}]\nroutes: [{{path: /, echo: true}}]\n"
    );
    let first = Gateway::start(&yaml);
    assert_eq!(first.addr.port(), port);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("second.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already listening") && err.contains("--takeover"),
        "{err}"
    );

    let mut second = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("--config")
        .arg(&file)
        .arg("--takeover")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(second.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = second.kill();
    let _ = second.wait();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
}
