#!/usr/bin/env bash
# Memory touched per relayed message (Ringway vs nginx vs HAProxy) in valgrind's cache simulator.
#
# The wall-clock benchmark (bench/peers.sh) varies by 15-20% between runs on this shared machine, and how much a
# proxy loses when its caches are cold (low message rates, busy neighbours) does not show in it reliably. This runs
# each proxy under callgrind with tiny simulated caches, so every distinct cache line a message touches counts as a
# miss, and reports instructions and cold lines per echoed message: deterministic, comparable between proxies and
# between commits. Builds the release binaries; installs valgrind, nginx and haproxy (apt-get) if missing.
#
# Usage: bench/cachesim.sh [--targets ringway,nginx,haproxy] [--conns N] [--messages M] [--size BYTES]
#                          [--no-build] [--no-install] [--no-save]
#   Defaults: 50 connections x 400 messages of 64 B. Takes 2-4 minutes.
#   Writes bench/results/cachesim-latest.md unless --no-save.
# Env: CARGO_TARGET_DIR (default: <repo>/target), as for cargo.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

build=1 install=1 save=1
py_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --targets|--conns|--messages|--size)
      [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }
      py_args+=("$1" "$2"); shift ;;
    --no-build) build=0 ;;
    --no-install) install=0 ;;
    --no-save) save=0 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=bench/common.sh
. "$root/bench/common.sh"
bench_binaries "$build"
BENCH_INSTALL="$install" bench_require valgrind nginx haproxy

workdir="$(mktemp -d /tmp/ringway-cachesim.XXXXXX)"
cleanup() {
  # cachesim.py stops everything it started; this catches what is left if it was killed outright.
  if [ -f "$workdir/pgids" ]; then
    while read -r pg; do kill -KILL -- "-$pg" 2>/dev/null || true; done <"$workdir/pgids"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

out="$workdir/report.md"
python3 "$root/bench/peers/cachesim.py" --ringway "$ringway" --load "$load" --workdir "$workdir" --out "$out" \
  "${py_args[@]}"
if [ "$save" = 1 ]; then
  mkdir -p "$root/bench/results"
  {
    cat "$out"
    echo ""
    echo "Run: $(date -u +%Y-%m-%dT%H:%M:%SZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(valgrind --version)," \
      "$(nginx -v 2>&1 | head -1), $(haproxy -v 2>&1 | head -1 | cut -d' ' -f1-3)."
  } >"$root/bench/results/cachesim-latest.md"
  echo "written: bench/results/cachesim-latest.md" >&2
fi
