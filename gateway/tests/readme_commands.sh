#!/usr/bin/env bash
# Runs every command README.md and the example route files show, verbatim, from the repository root with the
# release binaries on PATH (as after an install). Long-running commands (the gateway, the echo upstream) start in
# the background, are checked the way the README says to use them, and are stopped. `./test.sh` is the runner of
# this script and is not run again. A command the README shows that this script does not know is an error, so a new
# one cannot go untested.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/target/release:$PATH"
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d)
bg=()
cleanup() {
  for p in "${bg[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work" out.hgrm out.svg
}
trap cleanup EXIT

# Every command shown: README ```sh blocks, the example files' comment lines, inline `curl ...` in both.
python3 - >"$work/shown" <<'PY'
import glob, re
cmds = []
readme = open("README.md").read()
for block in re.findall(r"```sh\n(.*?)```", readme, re.S):
    for line in block.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line:
            cmds.append(line)
for path in sorted(glob.glob("config/examples/*.yaml")):
    for line in open(path):
        m = re.match(r"#\s+((?:cargo|ringway|curl)\s.*)$", line.rstrip())
        if m:
            cmds.append(m.group(1).strip())
for text in [readme] + [open(p).read() for p in glob.glob("config/examples/*.yaml")]:
    cmds += re.findall(r"`(curl [^`]+)`", text)
for c in dict.fromkeys(cmds):
    print(c)
PY

known=(
  "./test.sh"
  "cargo run --release -p ringway -- check config/examples/quickstart.yaml"
  "cargo run --release -p ringway -- --config config/examples/quickstart.yaml"
  "curl http://127.0.0.1:8080/"
  "ringway-load echo --listen 127.0.0.1:9001"
  "ringway-load --conns 100 --size 64 --duration 10s ws://127.0.0.1:8080/"
  "ringway-load --rate 20000 --conns 100 --size 64 --duration 10s --hgrm out.hgrm --plot out.svg ws://127.0.0.1:8080/"
  "ringway-load --connect-only --conns 9000 --ramp 2000 --duration 30s ws://127.0.0.1:8080/"
  "ringway check config/examples/quickstart.yaml"
  "cargo run --release -p ringway -- cert self-signed --out config/examples/certs --name localhost"
  "cargo run --release -p ringway -- --config config/examples/tls.yaml"
  "curl --cacert config/examples/certs/cert.pem https://localhost:8443/"
)
while IFS= read -r cmd; do
  found=0
  for k in "${known[@]}"; do [ "$k" = "$cmd" ] && found=1; done
  [ "$found" = 1 ] || { echo "README or an example shows a command this test does not run: $cmd"; exit 1; }
done <"$work/shown"
for k in "${known[@]}"; do
  grep -qxF -- "$k" "$work/shown" || { echo "no longer shown (remove it here): $k"; exit 1; }
done

run() { echo "\$ $1"; bash -c "$1" >"$work/out" 2>&1 || { cat "$work/out"; echo "FAILED: $1"; exit 1; }; tail -3 "$work/out"; }
start() { # command, line that says it is up
  echo "\$ $1 &"
  bash -c "exec $1" >"$work/bg.out" 2>&1 & bg+=($!)
  for _ in $(seq 600); do grep -q "$2" "$work/bg.out" && return; sleep 0.1; done
  cat "$work/bg.out"; echo "FAILED to start: $1"; exit 1
}
stop_last() { local p=${bg[-1]}; kill "$p"; wait "$p" 2>/dev/null || true; unset 'bg[-1]'; }

run "cargo run --release -p ringway -- check config/examples/quickstart.yaml"
run "ringway check config/examples/quickstart.yaml"
start "cargo run --release -p ringway -- --config config/examples/quickstart.yaml" "ringway listening on"
run "curl http://127.0.0.1:8080/"
run "ringway-load --conns 100 --size 64 --duration 10s ws://127.0.0.1:8080/"
run "ringway-load --rate 20000 --conns 100 --size 64 --duration 10s --hgrm out.hgrm --plot out.svg ws://127.0.0.1:8080/"
test -s out.hgrm && test -s out.svg
run "ringway-load --connect-only --conns 9000 --ramp 2000 --duration 30s ws://127.0.0.1:8080/"
stop_last
start "ringway-load echo --listen 127.0.0.1:9001" "127.0.0.1:9001"
stop_last
run "cargo run --release -p ringway -- cert self-signed --out config/examples/certs --name localhost"
start "cargo run --release -p ringway -- --config config/examples/tls.yaml" "ringway listening on"
run "curl --cacert config/examples/certs/cert.pem https://localhost:8443/"
stop_last
echo "every command shown in README.md and config/examples/ ran"
