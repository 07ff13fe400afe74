#!/usr/bin/env bash
# Fuzz smoke run: builds every fuzz target of a cargo-fuzz crate (this folder, frame-simd's, unless
# a folder is given: `smoke.sh gateway/fuzz`) and runs each for FUZZ_SECONDS (default 20) starting
# from the committed seeds in seeds/<target>/. Exits non-zero if a build fails or a target finds a
# crash (libFuzzer exits non-zero; the input is saved under artifacts/<target>/).
#
# Only stable Rust exists here: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only flags.
# Env: FUZZ_SECONDS, FUZZ_SANITIZER (address|none; default address, falls back to none when the
#      ASan build fails), CARGO_TARGET_DIR (default: fuzz/target).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "${1:-$here}"

secs="${FUZZ_SECONDS:-20}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

mapfile -t targets < <(cargo fuzz list)
[ "${#targets[@]}" -gt 0 ] || { echo "no fuzz targets in $PWD" >&2; exit 1; }
sanitizer="${FUZZ_SANITIZER:-address}"
echo "== building fuzz targets (sanitizer: $sanitizer)"
if ! cargo fuzz build --sanitizer "$sanitizer"; then
  if [ "$sanitizer" = address ] && [ -z "${FUZZ_SANITIZER:-}" ]; then
    echo "== ASan build failed; retrying with --sanitizer none"
    sanitizer=none
    cargo fuzz build --sanitizer none
  else
    exit 1
  fi
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${secs}s"
  mkdir -p "$work/$t"
  # New inputs go to the scratch dir; the committed seeds are only read.
  cargo fuzz run --sanitizer "$sanitizer" "$t" "$work/$t" "seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
echo "== fuzz smoke ($PWD): all targets (${targets[*]}) ran ${secs}s without a failure"
