//! Route files whose *key files* are wrong (`auth.jwt.key_file` / `jwks_file`): loaded with [`ringway_config::load`],
//! so key paths resolve against the fixture's folder whatever the working directory. Each
//! `tests/fixtures/invalid_files/*.yaml` must fail with its sibling `.expected` message (the file named by its bare
//! name). `RINGWAY_BLESS=1` rewrites the `.expected` files.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;

#[test]
fn bad_key_files_fail_with_the_expected_message() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid_files");
    let bless = std::env::var_os("RINGWAY_BLESS").is_some();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "fixtures missing: {files:?}");
    let mut failures = Vec::new();
    for file in files {
        let actual = match ringway_config::load(&file) {
            Ok(_) => {
                failures.push(format!(
                    "{}: loaded, but should have failed",
                    file.display()
                ));
                continue;
            }
            Err(e) => e.to_string(),
        };
        let actual = actual
            .strip_prefix(&format!("{}/", dir.display()))
            .unwrap_or(&actual)
            .to_owned();
        let expected_path = file.with_extension("expected");
        if bless {
            fs::write(&expected_path, format!("{actual}\n")).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap();
        if actual != expected.trim_end_matches('\n') {
            failures.push(format!(
                "{}:\n  expected: {}\n  actual:   {actual}",
                file.display(),
                expected.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
