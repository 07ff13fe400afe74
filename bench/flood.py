#!/usr/bin/env python3
"""Upgrade flood: other clients' p99 handshake time with and without one address flooding upgrades at 10x its
allowed rate, in the same run (phases alternate quiet / flood so drift on a shared machine hits both alike).

Ringway runs one worker pinned to core 1 with an echo route and `limits.per_client` (20 upgrades/s, burst 20,
loopback not exempt). Other clients: 8 addresses (127.0.0.10-17), each opening a WebSocket every 200 ms (5/s,
well under its limit), timing request sent -> 101 head received, then closing. The flooder (127.0.0.200, its own
process) opens connections and asks for upgrades at 200/s: 10x its allowed rate, so about 90 % get 429.
Writes bench/results/latest-flood.md (unless --no-save) and prints the table.
"""
import argparse
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

REQ = ("GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()

CONFIG = """listeners:
  - name: bench
    bind: 127.0.0.1:0
limits:
  per_client:
    max_connections: 256
    upgrades_per_second: {rate}
    upgrade_burst: {rate}
    exempt: []
routes:
  - path: /
    echo: true
"""


def upgrade(src, addr):
    """One upgrade from `src`: (status, seconds from request to the answer's head)."""
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((src, 0))
    s.settimeout(5)
    s.connect(addr)
    began = time.perf_counter()
    s.sendall(REQ)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    took = time.perf_counter() - began
    s.close()
    try:
        status = int(buf.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return status, took


def flooder(addr, per_second, stop_at, counts, threads=4):
    """Upgrades from one address at `per_second` in total (several threads: one blocking upgrade takes a while)."""
    os.sched_setaffinity(0, {0})
    tally = [0, 0]
    lock = threading.Lock()

    def run(i):
        gap = threads / per_second
        next_at = time.perf_counter() + i * gap / threads
        while time.perf_counter() < stop_at.value:
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                status, _ = upgrade("127.0.0.200", addr)
                with lock:
                    tally[0] += 1
                    tally[1] += status == 429
            except OSError:
                pass
            next_at += gap

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    counts[0], counts[1] = tally


def others(addr, seconds, every):
    """8 clients upgrading every `every` s each for `seconds`: the list of (status, latency)."""
    results = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(i):
        src = f"127.0.0.{10 + i}"
        next_at = time.perf_counter() + i * every / 8
        while True:
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if time.perf_counter() >= stop:
                return
            try:
                r = upgrade(src, addr)
            except OSError:
                r = (0, 0.0)
            with lock:
                results.append(r)
            next_at += every

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))] if v else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ringway", required=True)
    ap.add_argument("--phase", type=float, default=10.0, help="seconds per phase")
    ap.add_argument("--rounds", type=int, default=3, help="quiet+flood pairs")
    ap.add_argument("--rate", type=int, default=20, help="allowed upgrades/s per client")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "flood.yaml")
        with open(path, "w") as f:
            f.write(CONFIG.format(rate=args.rate))
        gw = subprocess.Popen(["taskset", "-c", "1", args.ringway, "--config", path, "--workers", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
        try:
            line = gw.stdout.readline().decode()
            host, port = line.split("ringway listening on ")[1].split()[0].rsplit(":", 1)
            addr = (host, int(port))
            threading.Thread(target=lambda: gw.stdout.read(), daemon=True).start()
            quiet, flood = [], []
            flood_sent = flood_refused = 0
            others(addr, 2, 0.2)  # warm-up
            for _ in range(args.rounds):
                quiet += others(addr, args.phase, 0.2)
                stop_at = mp.Value("d", time.perf_counter() + args.phase + 1.0)
                counts = mp.Array("q", 2)
                p = mp.Process(target=flooder, args=(addr, 10 * args.rate, stop_at, counts))
                p.start()
                time.sleep(0.5)
                flood += others(addr, args.phase, 0.2)
                p.join()
                flood_sent += counts[0]
                flood_refused += counts[1]
        finally:
            gw.kill()
            gw.wait()
    ok_q = [t for s, t in quiet if s == 101]
    ok_f = [t for s, t in flood if s == 101]
    bad = sum(1 for s, _ in quiet + flood if s != 101)
    p99_q, p99_f = pct(ok_q, 0.99), pct(ok_f, 0.99)
    ratio = p99_f / p99_q
    flood_rate = flood_sent / (args.rounds * (args.phase + 1.0))
    ms = lambda x: f"{x * 1000:.3f}"
    table = f"""# Upgrade flood: other clients' handshake time

Command: `bench/flood.sh` (phases of {args.phase:.0f} s, {args.rounds} quiet/flood pairs, alternating, one run).
Ringway: 1 worker pinned to core 1, echo route, `limits.per_client`: {args.rate} upgrades/s, burst {args.rate}.
Other clients: 8 addresses x 5 upgrades/s (request sent -> 101 head). Flooder: one address at
{10 * args.rate}/s target ({flood_rate:.0f}/s reached; {flood_refused} of {flood_sent} refused with 429), its own process.
Load on core 0. Shared 2-core machine: figures are noisy; the ratio is what the target is about.

| phase | handshakes | p50 ms | p90 ms | p99 ms |
|---|---|---|---|---|
| quiet | {len(ok_q)} | {ms(pct(ok_q, .5))} | {ms(pct(ok_q, .9))} | {ms(p99_q)} |
| flood | {len(ok_f)} | {ms(pct(ok_f, .5))} | {ms(pct(ok_f, .9))} | {ms(p99_f)} |

p99 flood / quiet: **{ratio:.2f}** (target <= 1.20). Other clients refused or failed: {bad}.
"""
    print(table)
    if not args.no_save:
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "latest-flood.md")
        with open(out, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
