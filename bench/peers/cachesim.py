#!/usr/bin/env python3
"""Memory touched per relayed message, Ringway vs nginx vs HAProxy, in a cache simulator.

Owns the orchestration of bench/cachesim.sh. Each proxy runs under valgrind's callgrind with deliberately tiny
simulated caches (8 KiB L1d, 64 KiB last level), so almost every distinct cache line a message makes the proxy touch
is a simulated miss. That is a deterministic stand-in for what the proxy costs when its state is cold: at low message
rates, or when other processes on the machine evict its caches. On this shared machine, wall-clock benchmarks vary by
±15-20% between runs, and this count does not.

Per target, two runs through one proxy to the echo upstream: C connections x 1 message, and C connections x M
messages. The difference, divided by C x (M - 1), is the cost of one echoed message (both directions through the
proxy) without start-up, handshakes and shutdown. Only user space is simulated (valgrind does not see the kernel).

Every process it starts runs in its own session and is stopped in a `finally`, as in run.py.
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402  (the sibling module: process handling and the proxies' configs)

# Events in the order callgrind writes them with --cache-sim=yes.
EVENTS = ["Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw"]
CACHES = ["--D1=8192,2,64", "--I1=32768,8,64", "--LL=65536,4,64"]


def totals(path):
    """The event totals of one callgrind output file, as a dict."""
    names, values = None, None
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                names = line.split()[1:]
            elif line.startswith("summary:") or line.startswith("totals:"):
                values = [int(x) for x in line.split()[1:]]
    if names is None or values is None:
        raise RuntimeError(f"{path}: no events/summary line (did the proxy exit cleanly?)")
    return dict(zip(names, values))


def one_run(procs, t, echo_port, messages):
    """Runs target t under callgrind for A.conns x messages; returns its event totals."""
    port = R.free_port()
    out = os.path.join(A.workdir, f"callgrind.{t}.{messages}")
    argv = ["valgrind", "--tool=callgrind", "--cache-sim=yes", *CACHES, f"--callgrind-out-file={out}"]
    argv += R.proxy_argv(t, A.workdir, port, echo_port, 1000, A.ringway, "io_uring", single_process=True)
    p = procs.start(f"{t}-{messages}", argv, A.proxy_cpu)
    try:
        R.wait_port(port, p, timeout=60.0)
        time.sleep(0.5)
        res = subprocess.run(
            ["taskset", "-c", str(A.load_cpu), A.load, "-q", "--threads", "1", "--conns", str(A.conns),
             "--size", str(A.size), "--messages-per-conn", str(messages), "--duration", "300s",
             f"ws://127.0.0.1:{port}/"],
            capture_output=True, text=True,
        )
        if res.returncode != 0:
            raise RuntimeError(f"{t}: ringway-load failed ({res.returncode}): {res.stderr.strip()[-500:]}")
        time.sleep(0.3)
    finally:
        procs.stop(p, grace=60.0)
    return totals(out)


def main():
    work = A.workdir
    procs = R.Procs(work)
    rows = {}
    try:
        echo_port = R.free_port()
        echo = procs.start("echo", [A.load, "echo", "--threads", "1", "--listen", f"127.0.0.1:{echo_port}"],
                           A.load_cpu)
        R.wait_port(echo_port, echo)
        for t in A.targets:
            R.log(f"{t}: {A.conns} x 1 and {A.conns} x {A.messages} messages of {A.size} B under callgrind")
            base = one_run(procs, t, echo_port, 1)
            full = one_run(procs, t, echo_port, A.messages)
            n = A.conns * (A.messages - 1)
            rows[t] = {e: (full.get(e, 0) - base.get(e, 0)) / n for e in EVENTS}
    finally:
        procs.stop_all()
    label = {"ringway": "Ringway", "nginx": "nginx", "haproxy": "HAProxy"}
    lines = [
        "# Memory touched per echoed message, in a cache simulator",
        "",
        f"Command: `bench/cachesim.sh`. Each proxy under `valgrind --tool=callgrind --cache-sim=yes {' '.join(CACHES)}`"
        f" (tiny caches: nearly every distinct line touched is a miss), one worker, {A.conns} connections x "
        f"{A.messages} messages of {A.size} B, closed loop, minus a run of {A.conns} x 1 (start-up, handshakes, "
        "shutdown), per echoed message (both directions). User space only. Deterministic up to batching: "
        "how many messages one wake-up handles varies a little between runs.",
        "",
        "| per echoed message | " + " | ".join(label[t] for t in A.targets) + " |",
        "|---|" + "---:|" * len(A.targets),
    ]
    what = [
        ("Ir", "instructions"),
        ("Dr", "data reads"),
        ("Dw", "data writes"),
        ("DLmr", "last-level read misses (lines read cold)"),
        ("DLmw", "last-level write misses (lines written cold)"),
        ("D1mr", "L1d read misses"),
    ]
    for key, name in what:
        lines.append(f"| {name} | " + " | ".join(f"{rows[t][key]:,.0f}" for t in A.targets) + " |")
    if "ringway" in rows:
        for t in A.targets:
            if t == "ringway":
                continue
            cold = rows["ringway"]["DLmr"] + rows["ringway"]["DLmw"]
            other = rows[t]["DLmr"] + rows[t]["DLmw"]
            if other > 0:
                lines.append("")
                lines.append(f"Ringway/{label[t]}: cold lines per message {cold / other:.2f}x, "
                             f"instructions {rows['ringway']['Ir'] / max(rows[t]['Ir'], 1):.2f}x.")
    report = "\n".join(lines) + "\n"
    print(report)
    if A.out:
        R.write(A.out, report)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ringway", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--targets", default="ringway,nginx,haproxy")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--out", default="")
    A = ap.parse_args()
    A.targets = [t for t in A.targets.split(",") if t]
    if A.messages < 2:
        ap.error("--messages must be at least 2")
    main()
