#!/usr/bin/env bash
# Issue 13's reload test under load: 1,000 WebSockets echo through the gateway (ringway-load, closed loop) while
# the route file is rewritten and reloaded 20 times, alternating between two upstream pools. Passes when
# ringway-load reports 0 errors, 0 mismatches, 0 unexpected closes and 0 failed connects, and every reload was
# applied (the log counts 20 "route file reloaded"). Run by ./test.sh; needs the release binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${B:-target/release}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

"$B/ringway-load" echo --listen 127.0.0.1:0 --threads 1 >"$work/echo-a.out" 2>/dev/null & pids+=($!)
"$B/ringway-load" echo --listen 127.0.0.1:0 --threads 1 >"$work/echo-b.out" 2>/dev/null & pids+=($!)
addr_of() { for _ in $(seq 100); do a=$(grep -oE '127\.0\.0\.1:[0-9]+' "$1" | head -1 || true); [ -n "$a" ] && { echo "$a"; return; }; sleep 0.05; done; echo "no address in $1" >&2; exit 1; }
A=$(addr_of "$work/echo-a.out"); Bu=$(addr_of "$work/echo-b.out")

config() {
  cat <<YAML
listeners:
  - name: main
    bind: 127.0.0.1:0
upstreams:
  up:
    servers: [$1]
routes:
  - path: /
    upstream: up
YAML
}
config "$A" >"$work/ringway.yaml"
"$B/ringway" --config "$work/ringway.yaml" --workers 2 >"$work/gw.out" 2>"$work/gw.err" & gw=$!; pids+=($gw)
G=$(addr_of "$work/gw.out")

"$B/ringway-load" --conns 1000 --ramp 2000 --threads 1 --warmup 1s --duration 8s --json "ws://$G/" \
  >"$work/load.json" 2>"$work/load.err" & load=$!
sleep 2
for i in $(seq 20); do
  if [ $((i % 2)) = 1 ]; then config "$Bu"; else config "$A"; fi >"$work/ringway.yaml.new"
  mv "$work/ringway.yaml.new" "$work/ringway.yaml"
  kill -HUP "$gw"
  sleep 0.3
done
wait "$load" || { echo "ringway-load failed:"; cat "$work/load.err"; exit 1; }
python3 - "$work/load.json" "$work/gw.err" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
log = open(sys.argv[2]).read()
reloads = log.count("route file reloaded")
keys = ["errors", "mismatches", "unexpected_closes", "connect_failures"]
bad = {k: r.get(k) for k in keys if r.get(k)}
print(f"reload under load: {r.get('connections', r.get('conns'))} connections, {r.get('messages', r.get('msgs'))} echoes, "
      f"{reloads} reloads applied, " + ", ".join(f"{k} {r.get(k, 0)}" for k in keys))
if bad or reloads != 20:
    print(json.dumps(r, indent=1)); print(log[-3000:]); sys.exit(1)
PY
