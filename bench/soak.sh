#!/usr/bin/env bash
# Soak: the gateway under steady load, connection churn, route-file reloads and a misbehaving-client mix for a long
# time; fails unless errors and mismatches are 0, resident memory is flat after the warm-up and the descriptors are
# back to where they started. Not run in CI (an hour by default).
#
# Usage: bench/soak.sh [--duration 1h|10m|60s] [--reload-every SECS] [--rate MSGS] [--no-build] [--no-save]
#   --duration D      how long the load runs (default 1h; units s, m, h)
#   --reload-every S  SIGHUP (route file rewritten) every S seconds (default 30)
#   --rate R          steady open-loop msgs/s over 64 connections, sizes 64 B..16 KiB (default 2000)
#   --no-build        use the release binaries as they are
#   --no-save         print only; do not write bench/results/latest-soak.md
# Env: CARGO_TARGET_DIR (default: <repo>/target), as for cargo.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

cmd="bench/soak.sh${*:+ $*}"
build=1 save=1
py_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration|--reload-every|--rate)
      [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }
      py_args+=("$1" "$2"); shift ;;
    --no-build) build=0 ;;
    --no-save) save=0 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=bench/common.sh
. "$root/bench/common.sh"
bench_binaries "$build"

workdir="$(mktemp -d /tmp/ringway-soak.XXXXXX)"
py=""
stop_driver() {
  if [ -n "$py" ]; then
    kill -TERM "$py" 2>/dev/null || true
    wait "$py" 2>/dev/null || true
  fi
  echo "interrupted; logs kept in $workdir" >&2
  exit "$1"
}
trap 'stop_driver 130' INT
trap 'stop_driver 143' TERM

out="$workdir/report.md"
[ "$save" = 1 ] || out="$workdir/report.md.unsaved"
python3 "$root/bench/soak/soak.py" --ringway "$ringway" --load "$load" --workdir "$workdir" \
  --command "$cmd" --git "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" --report "$out" "${py_args[@]}" &
py=$!
status=0
wait "$py" || status=$?
py=""
if [ "$save" = 1 ] && [ -f "$out" ]; then
  mkdir -p "$root/bench/results"
  cp "$out" "$root/bench/results/latest-soak.md"
  echo "report: bench/results/latest-soak.md" >&2
fi
if [ "$status" = 0 ]; then
  rm -rf "$workdir"
else
  echo "soak failed (status $status); logs kept in $workdir" >&2
fi
exit "$status"
