#!/usr/bin/env python3
"""Two load clients side by side (bench/peers.sh --indep): the closed-loop 64 B x 100 and 16 KiB x 50 figures of
Ringway, nginx and HAProxy measured with `ringway-load` and with an independent client (`ws-indep-load`,
tokio-tungstenite), in the same run, repeats interleaved, with run.py's pinning and CPU sampling. Prints a markdown
table of messages per proxy CPU-second per client, and the Ringway-vs-peer ratio each client sees.
"""

import argparse
import os
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as peers  # noqa: E402

PROXIES = peers.PROXIES


class IndepBench(peers.Bench):
    client = "ringway-load"

    def load(self, t, scenario, rep, extra, duration, warmup):
        if self.client == "ringway-load":
            return super().load(t, scenario, rep, extra, duration, warmup)
        # The same sampling as run.py's load(), with the independent client's command line.
        saved = self.a.load
        try:
            self.a.load = self.a.indep
            return super().load(t, scenario, rep, extra, duration, warmup)
        finally:
            self.a.load = saved

    def run(self):
        a = self.a
        self.start_echo()
        for t in PROXIES:
            self.start_proxy(t)
        for name, extra in (("64B", ["--conns", "100", "--size", "64"]),
                            ("16KiB", ["--conns", "50", "--size", "16KiB"])):
            for rep in range(a.repeats):
                for client in ("ringway-load", "ws-indep-load"):
                    self.client = client
                    for t in PROXIES:
                        self.load(t, f"{name}.{client}", rep, extra, a.duration, a.warmup)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ringway", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--indep", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--max-conns", type=int, default=9500)
    ap.add_argument("--ringway-driver", default="auto", choices=["auto", "io_uring", "epoll"])
    ap.add_argument("--quiet-wait", type=float, default=10.0)
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--upgrade-conns", type=int, default=0)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda s, _f: (_ for _ in ()).throw(SystemExit(128 + s)))
    os.sched_setaffinity(0, {args.load_cpu})
    b = IndepBench(args)
    try:
        b.run()
    finally:
        b.procs.stop_all()

    def med(scenario, t, key):
        v = b.values(scenario, t, key)
        return statistics.median(v) if v else None

    print("| figure | client | Ringway | nginx | HAProxy | Ringway/nginx | Ringway/HAProxy |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in ("64B", "16KiB"):
        for client in ("ringway-load", "ws-indep-load"):
            for key, label in (("msgs_per_cpu_s", "msgs per proxy CPU-s"), ("msgs_per_sec", "msg/s")):
                v = {t: med(f"{name}.{client}", t, key) for t in PROXIES}
                cells = [f"{v[t]:,.0f}" if v[t] else "-" for t in PROXIES]
                r = [f"{v['ringway'] / v[p]:.2f}x" if v["ringway"] and v[p] else "-" for p in ("nginx", "haproxy")]
                print(f"| {name}: {label} | {client} | " + " | ".join(cells) + " | " + " | ".join(r) + " |")
    bad = [r for r in b.runs if peers.bad(r)]
    print(f"\nRuns with errors or mismatches: {len(bad)}")


if __name__ == "__main__":
    main()
