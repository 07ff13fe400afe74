#!/usr/bin/env bash
# Side-by-side WebSocket proxy benchmark: direct-to-echo vs Ringway vs nginx vs HAProxy.
#
# One command: builds the release binaries, installs Debian's nginx and haproxy if missing, starts
# the echo upstream and the three proxies (one worker each; proxies pinned alone on core 1, echo and
# load generator on core 0), runs 64 B x 100 and 16 KiB x 50 closed loop, a fixed open-loop rate,
# upgrades/s and RSS per idle connection against every target, and writes a markdown table to
# bench/results/latest.md plus a dated copy (and the raw runs as JSON beside them).
#
# Usage: bench/peers.sh [--quick] [--repeats N] [--duration SECS] [--warmup SECS] [--rate MSGS] [--light-rate MSGS]
#                       [--idle-conns N] [--idle-ramp PER_SEC] [--upgrade-conns N] [--no-build] [--no-install] [--micro]
#                       [--ringway-driver auto|io_uring|epoll] [--quiet-wait SECS] [--no-save] [--tls]
#   --quick          smoke test: 1 repeat x 2 s, 0.5 s warm-up, 2000 idle connections, no result files
#                    unless --save
#   --repeats N      repeats per figure (default 3); the median is reported with min-max
#   --duration S     measured seconds per run (default 5)
#   --rate R         open-loop msg/s (default: 50% of the slowest proxy's closed-loop 64 B median)
#   --light-rate R   second, lighter open-loop msg/s (default: half of --rate)
#   --idle-conns N   idle connections for the memory figure (default 9000; the hard RLIMIT_NOFILE here
#                    is 20000 and a proxy needs 2 fds per connection)
#   --idle-ramp R    also measure idle memory with connections opened at R/s (default 2000; 0 skips)
#   --quiet-wait S   before each run wait up to S s (default 10) for other processes to go idle
#   --micro          also run bench/micro.sh (frame-simd micro-benchmarks) and append its tables
#   --no-save        print only; do not write bench/results/
#   --tls            the TLS runs instead (bench/peers/tls.py): wss 64 B and 16 KiB msgs per proxy CPU-s, full and
#                    resumed TLS 1.3 handshakes + upgrades per proxy CPU-s, KiB per idle wss connection; nginx and
#                    HAProxy terminate TLS with the same ECDSA P-256 certificate; bench/results/latest-tls.md
#   --indep          the closed-loop figures with two load clients side by side: ringway-load and an independent
#                    one (bench/src/bin/ws-indep-load.rs, tokio-tungstenite); bench/results/latest-indep.md
# Env: CARGO_TARGET_DIR (default: <repo>/target), as for cargo.
# Defaults take about 9 minutes plus any waits for a quiet machine (--quick: about 1.5 minutes).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

quick=0 build=1 install=1 micro=0 save=1 save_forced=0 tls=0 indep=0
py_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --repeats|--duration|--warmup|--rate|--light-rate|--idle-conns|--idle-ramp|--upgrade-conns|--ringway-driver|--quiet-wait)
      [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }
      py_args+=("$1" "$2"); shift ;;
    --no-build) build=0 ;;
    --no-install) install=0 ;;
    --micro) micro=1 ;;
    --no-save) save=0 ;;
    --tls) tls=1 ;;
    --indep) indep=1 ;;
    --save) save_forced=1 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then
  # Later flags on the command line win over these (argparse keeps the last value).
  py_args=(--repeats 1 --duration 2 --warmup 0.5 --idle-conns 2000 --upgrade-conns 1000 "${py_args[@]}")
  [ "$save_forced" = 1 ] || save=0
fi

# shellcheck source=bench/common.sh
. "$root/bench/common.sh"
bench_binaries "$build"
BENCH_INSTALL="$install" bench_require nginx haproxy
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores (proxy on core 1, load on core 0)" >&2; exit 2; }

workdir="$(mktemp -d /tmp/ringway-peers.XXXXXX)"
cleanup() {
  # run.py stops everything it started; this catches what is left if it was killed outright.
  if [ -f "$workdir/pgids" ]; then
    while read -r pg; do
      kill -TERM -- "-$pg" 2>/dev/null || true
    done <"$workdir/pgids"
    sleep 0.5
    while read -r pg; do
      kill -KILL -- "-$pg" 2>/dev/null || true
    done <"$workdir/pgids"
  fi
}
trap cleanup EXIT
py=""
# bash runs traps only between commands, so the driver runs in the background and is waited for:
# a TERM/INT to this script is forwarded to it (it stops what it started) before we exit.
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

cmd="bench/peers.sh${*:+ $*}"
[ "$quick" = 1 ] && cmd="bench/peers.sh --quick${*:+ $(printf '%s ' "$@" | sed 's/--quick *//')}"
machine="$workdir/machine.md"
{
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)," \
    "hard RLIMIT_NOFILE $(ulimit -Hn), load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo ""
  echo "Versions: $("$ringway" --version 2>&1 | head -1) (git $(git rev-parse --short HEAD 2>/dev/null || echo '?')), $("$load" --version 2>&1 | head -1)," \
    "$(nginx -v 2>&1 | head -1), $(haproxy -v 2>&1 | head -1 | cut -d' ' -f1-3)."
} >"$machine"

if [ "$indep" = 1 ]; then
  indep_bin="$(dirname "$ringway")/ws-indep-load"
  [ "$build" = 0 ] || cargo build --release -q -p ringway-bench --bin ws-indep-load
  indep_args=()
  for ((i = 0; i < ${#py_args[@]}; i++)); do
    case "${py_args[$i]}" in
      --repeats|--duration|--warmup|--quiet-wait|--ringway-driver) indep_args+=("${py_args[$i]}" "${py_args[$((i + 1))]}"); i=$((i + 1)) ;;
      *) ;;
    esac
  done
  python3 "$root/bench/peers/indep.py" --ringway "$ringway" --load "$load" --indep "$indep_bin" \
    --workdir "$workdir" "${indep_args[@]}" >"$workdir/indep-table.md" &
  py=$!
  wait "$py" || { echo "independent-client bench failed; logs kept in $workdir" >&2; exit 1; }
  py=""
  {
    echo "# Two load clients: ringway-load and an independent one (tokio-tungstenite)"
    echo ""
    echo "Command: \`$cmd\` ($(date -u '+%Y-%m-%d %H:%M UTC'))."
    echo ""
    cat "$machine"
    echo ""
    cat "$workdir/indep-table.md"
  } >"$workdir/report-indep.md"
  cat "$workdir/report-indep.md"
  [ "$save" = 1 ] && mkdir -p "$root/bench/results" && cp "$workdir/report-indep.md" "$root/bench/results/latest-indep.md"
  rm -rf "$workdir"
  exit 0
fi

if [ "$tls" = 1 ]; then
  tls_args=()
  for ((i = 0; i < ${#py_args[@]}; i++)); do
    case "${py_args[$i]}" in
      --rate|--light-rate|--upgrade-conns|--idle-ramp) i=$((i + 1)) ;;  # not TLS scenarios
      *) tls_args+=("${py_args[$i]}") ;;
    esac
  done
  python3 "$root/bench/peers/tls.py" --ringway "$ringway" --load "$load" --workdir "$workdir" \
    --raw "$workdir/raw-tls.json" "${tls_args[@]}" >"$workdir/tls-table.md" &
  py=$!
  wait "$py" || { echo "TLS bench failed; logs kept in $workdir" >&2; exit 1; }
  py=""
  {
    echo "# Ringway vs nginx vs HAProxy terminating TLS"
    echo ""
    echo "Command: \`$cmd\` ($(date -u '+%Y-%m-%d %H:%M UTC'))."
    echo ""
    cat "$machine"
    echo ""
    cat "$workdir/tls-table.md"
  } >"$workdir/report-tls.md"
  cat "$workdir/report-tls.md"
  if [ "$save" = 1 ]; then
    mkdir -p "$root/bench/results"
    cp "$workdir/report-tls.md" "$root/bench/results/latest-tls.md"
    cp "$workdir/raw-tls.json" "$root/bench/results/peers-tls-$(date -u +%Y-%m-%d-%H%M).json"
  fi
  rm -rf "$workdir"
  exit 0
fi

python3 "$root/bench/peers/run.py" --ringway "$ringway" --load "$load" --workdir "$workdir" \
  --raw "$workdir/raw.json" "${py_args[@]}" &
py=$!
if ! wait "$py"; then
  echo "bench driver failed; logs kept in $workdir" >&2
  exit 1
fi
py=""
echo "" >>"$machine"
echo "Load average after the run: $(cut -d' ' -f1-3 /proc/loadavg) (other jobs share this machine; see the spread)." >>"$machine"

report="$workdir/report.md"
python3 "$root/bench/peers/report.py" "$workdir/raw.json" --command "$cmd" --machine-file "$machine" >"$report"

if [ "$micro" = 1 ]; then
  {
    echo "## frame-simd micro-benchmarks (bench/micro.sh)"
    echo ""
    "$root/bench/micro.sh" || echo "(bench/micro.sh failed)"
  } >>"$report"
fi

cat "$report"
if [ "$save" = 1 ]; then
  mkdir -p "$root/bench/results"
  stamp="$(date -u +%Y-%m-%d-%H%M)"
  cp "$report" "$root/bench/results/latest.md"
  cp "$report" "$root/bench/results/peers-$stamp.md"
  cp "$workdir/raw.json" "$root/bench/results/peers-$stamp.json"
  echo "written: bench/results/latest.md, bench/results/peers-$stamp.md (+ .json)" >&2
fi
rm -rf "$workdir"
