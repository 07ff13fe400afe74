#!/usr/bin/env bash
# Upgrade flood benchmark: other clients' p99 handshake time with and without one address flooding upgrades at 10x
# its allowed rate (limits.per_client), same run; writes bench/results/latest-flood.md. See bench/flood.py.
#
# Usage: bench/flood.sh [--no-build] [--phase SECS] [--rounds N] [--no-save]
# Env: CARGO_TARGET_DIR (default: <repo>/target), as for cargo. Takes about 1 minute with the defaults.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
build=1
args=()
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    *) args+=("$a") ;;
  esac
done
target="${CARGO_TARGET_DIR:-$root/target}"
if [ "$build" = 1 ]; then
  cargo build --release -p ringway --bin ringway
fi
exec python3 bench/flood.py --ringway "$target/release/ringway" "${args[@]}"
