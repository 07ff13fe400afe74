#!/usr/bin/env bash
# Ringway's whole test suite: the one command README.md names and .ci/run calls.
# It installs what it needs itself (cargo-fuzz via cargo, a Python venv with kosoku for the Autobahn cases).
#
#   ./test.sh            everything
#   SKIP_FUZZ=1 ./test.sh / SKIP_AUTOBAHN=1 ./test.sh   skip the slow external stages locally
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "headless Chromium for the browser test (Debian package chromium)"
if ! command -v chromium >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
chromium --version

step "cargo test (unit, property, integration and browser tests; both runtime drivers)"
cargo test --workspace

step "reload under load: 1,000 WebSockets echo through 20 route-file reloads (release build)"
cargo build --release -q -p ringway -p ringway-load
gateway/tests/reload_under_load.sh

step "every command README.md and config/examples/ show, verbatim"
gateway/tests/readme_commands.sh

step "frame-simd tests with the scalar paths forced (feature force-scalar)"
cargo test -p frame-simd --features force-scalar

if [ -z "${SKIP_FUZZ:-}" ]; then
  step "fuzz smoke run (frame-simd: decoder, masking, UTF-8; gateway: request-head reader, chunked decoder, TLS entry, PROXY protocol, config loader)"
  FUZZ_SECONDS="${FUZZ_SECONDS:-15}" frame-simd/fuzz/smoke.sh
  FUZZ_SECONDS="${FUZZ_SECONDS:-15}" frame-simd/fuzz/smoke.sh "$PWD/gateway/fuzz"
fi

if [ -z "${SKIP_AUTOBAHN:-}" ]; then
  step "Autobahn TestSuite cases through the gateway vs directly (kosoku)"
  autobahn/run.sh
fi

step "all stages passed"
