#!/usr/bin/env bash
# Runs the frame-simd micro-benchmarks (masking, UTF-8, header decode) with quick criterion settings
# and prints markdown tables: masking GB/s with the ratio to memcpy, UTF-8 GB/s with the ratio to
# std::str::from_utf8, and header/frame decode ns per frame.
#
# Usage: bench/micro.sh [extra criterion args, e.g. a filter like 'mask/']
# Env:   CARGO_TARGET_DIR (default: <repo>/target), CRITERION_HOME (default: $CARGO_TARGET_DIR/criterion),
#        MICRO_ARGS (default: "--warm-up-time 1 --measurement-time 2"),
#        MICRO_REPORT_ONLY=1 to print the tables of the last run without running anything.
# Figures are criterion's median time per iteration (robust to other processes' noise).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
export CRITERION_HOME="${CRITERION_HOME:-$target/criterion}"
if [ -z "${MICRO_REPORT_ONLY:-}" ]; then
  # Only this run's results go into the tables.
  rm -rf "$CRITERION_HOME/mask" "$CRITERION_HOME/utf8" "$CRITERION_HOME/header"
  # shellcheck disable=SC2086
  cargo bench -p ringway-bench --bench mask --bench utf8 --bench header -- \
    ${MICRO_ARGS:---warm-up-time 1 --measurement-time 2} "$@" >&2
fi

python3 - "$CRITERION_HOME" <<'PY'
import json, os, sys

home = sys.argv[1]
rows = {}  # group -> value -> function -> (ns, throughput dict)
for dirpath, _, files in os.walk(home):
    if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
        continue
    with open(os.path.join(dirpath, "benchmark.json")) as f:
        bench = json.load(f)
    with open(os.path.join(dirpath, "estimates.json")) as f:
        ns = json.load(f)["median"]["point_estimate"]
    group = bench["group_id"]
    value = bench.get("value_str") or ""
    rows.setdefault(group, {}).setdefault(value, {})[bench["function_id"]] = (ns, bench.get("throughput") or {})

def size_key(label):
    units = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20}
    for unit in ("KiB", "MiB", "B"):
        if label.endswith(unit) and label[: -len(unit)].isdigit():
            return int(label[: -len(unit)]) * units[unit]
    return label

def gbps(entry):
    ns, tp = entry
    return tp.get("Bytes", 0) / ns if ns else 0.0

def table(group, baseline, order, extra=None):
    data = rows.get(group)
    if not data:
        return
    funcs = [f for f in order if any(f in d for d in data.values())]
    funcs += sorted({f for d in data.values() for f in d} - set(funcs))
    head = ["size"] + funcs + ([extra[0]] if extra else [])
    print(f"\n### {group}: GB/s, median (ratio to {baseline})\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for value in sorted(data, key=lambda v: (isinstance(size_key(v), str), size_key(v))):
        d = data[value]
        base = gbps(d[baseline]) if baseline in d else None
        cells = [value]
        for f in funcs:
            if f not in d:
                cells.append("-")
                continue
            g = gbps(d[f])
            cells.append(f"{g:.2f} ({g / base:.2f}x)" if base else f"{g:.2f}")
        if extra:
            num, den = extra[1], extra[2]
            cells.append(f"{gbps(d[num]) / gbps(d[den]):.2f}x" if num in d and den in d else "-")
        print("| " + " | ".join(cells) + " |")

table("mask", "memcpy", ["scalar", "word", "sse2", "avx2", "avx512", "neon", "dispatched", "memcpy"],
      extra=("dispatched/word", "dispatched", "word"))
table("utf8", "std", ["std", "validator-std", "validator-simd", "validator-simd-1500B-reads"])

data = rows.get("header")
if data:
    print("\n### header: ns per frame\n")
    print("| bench | ns/frame |")
    print("|---|---|")
    for value in sorted(data):
        for func, (ns, tp) in sorted(data[value].items()):
            per = ns / tp.get("Elements", 1)
            print(f"| {func}/{value} | {per:.2f} |")
PY
