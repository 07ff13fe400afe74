//! Fixture tests for the route file.
//!
//! - `tests/fixtures/valid/*.yaml` and `examples/*.yaml` must load.
//! - `tests/fixtures/invalid/*.yaml` must fail, and the error's Display must equal the one-line
//!   sibling `.expected` file exactly. Messages use the bare file name (`parse(text, name)`).
//!
//! To (re)write `.expected` files after a deliberate wording change, run with
//! `RINGWAY_BLESS=1` and review the diff before committing.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn valid_fixtures_and_examples_load() {
    let mut files = yaml_files(&crate_dir().join("tests/fixtures/valid"));
    files.extend(yaml_files(&crate_dir().join("examples")));
    assert!(files.len() >= 6, "fixtures missing: {files:?}");
    for file in files {
        match ringway_config::load(&file) {
            Ok(cfg) => {
                assert!(!cfg.listeners.is_empty());
                assert!(!cfg.routes.is_empty());
                assert!(cfg.summary().contains("routes ("));
            }
            Err(e) => panic!("{} should load: {e}", file.display()),
        }
    }
}

#[test]
fn invalid_fixtures_fail_with_the_expected_message() {
    let bless = std::env::var_os("RINGWAY_BLESS").is_some();
    let files = yaml_files(&crate_dir().join("tests/fixtures/invalid"));
    assert!(
        files.len() >= 15,
        "need at least 15 invalid fixtures, have {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        let text = fs::read_to_string(&file).unwrap();
        let actual = match ringway_config::parse(&text, &name) {
            Ok(_) => {
                failures.push(format!("{name}: parsed, but should have failed"));
                continue;
            }
            Err(e) => e.to_string(),
        };
        assert!(
            !actual.contains('\n'),
            "{name}: message is not one line: {actual:?}"
        );
        let expected_path = file.with_extension("expected");
        if bless {
            fs::write(&expected_path, format!("{actual}\n")).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} is missing", expected_path.display()));
        if actual != expected.trim_end_matches('\n') {
            failures.push(format!(
                "{name}:\n  expected: {}\n  actual:   {actual}",
                expected.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_message_names_file_line_and_column() {
    for file in yaml_files(&crate_dir().join("tests/fixtures/invalid")) {
        let text = fs::read_to_string(&file).unwrap();
        let err = ringway_config::parse(&text, "f.yaml").unwrap_err();
        let (line, column) = err.position().unwrap();
        assert!(line >= 1 && column >= 1, "{}: {err}", file.display());
        assert!(
            err.to_string()
                .starts_with(&format!("f.yaml:{line}:{column}: ")),
            "{err}"
        );
    }
}

#[test]
fn unreadable_file_is_an_error_naming_it() {
    let missing = crate_dir().join("tests/fixtures/does-not-exist.yaml");
    let err = ringway_config::load(&missing).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}: cannot read file: ", missing.display())),
        "{text}"
    );
    assert!(err.position().is_none());
}

/// Every prefix of the full example either loads or fails with a positioned one-line message;
/// nothing panics on half-written files.
#[test]
fn truncated_files_never_panic() {
    let text = fs::read_to_string(crate_dir().join("examples/full.yaml")).unwrap();
    let mut errors = 0;
    for (cut, _) in text.char_indices().step_by(3) {
        if let Err(e) = ringway_config::parse(&text[..cut], "cut.yaml") {
            errors += 1;
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line message at {cut}: {msg:?}");
            let (line, column) = e.position().unwrap();
            assert!(line >= 1 && column >= 1, "{msg}");
        }
    }
    assert!(
        errors > 100,
        "expected most prefixes to be rejected, got {errors}"
    );
}
