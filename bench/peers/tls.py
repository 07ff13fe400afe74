#!/usr/bin/env python3
"""TLS side of the peers bench (bench/peers.sh --tls): Ringway, nginx and HAProxy terminating TLS with the same
ECDSA P-256 certificate (made by `ringway cert self-signed`) in front of the same echo upstream.

Owns: the TLS configs of the three proxies and the TLS scenarios, run with the machinery of run.py (same pinning,
CPU sampling and quiet waits):
  - wss 64 B x 100 and 16 KiB x 50 closed loop: messages per proxy CPU-second;
  - handshakes: N connections opened at --handshake-ramp per second, each a full TLS 1.3 handshake + WebSocket
    upgrade + one echo + close (session tickets and caches off on every proxy): handshakes per proxy CPU-second; then
    the same with resumption on (tickets and caches on; the load generator keeps one client session cache, so nearly
    every handshake after the first few resumes: 182 of 200 in a check against Ringway's debug log);
  - idle: RSS per idle wss connection (both legs), connections paced like run.py's idle_paced.
Writes a markdown table on stdout and every run as JSON to --raw.
"""

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as peers  # noqa: E402

PROXIES = peers.PROXIES
LABEL = peers.LABEL


def ringway_config(port, echo_port, max_conns, cert, key, resume):
    base = peers.ringway_config(port, echo_port, max_conns)
    tls = (
        f"    tls:\n      certificates:\n        - cert: {cert}\n          key: {key}\n"
        f"      session_tickets: {'true' if resume else 'false'}\n"
        f"      session_cache: {1024 if resume else 0}\n"
    )
    return base.replace(f"    bind: 127.0.0.1:{port}\n", f"    bind: 127.0.0.1:{port}\n{tls}")


def nginx_config(workdir, port, echo_port, max_conns, cert, key, resume):
    base = peers.nginx_config(workdir, port, echo_port, max_conns)
    cache = "shared:SSL:10m" if resume else "off"
    return base.replace(
        f"listen 127.0.0.1:{port} backlog=4096;",
        f"listen 127.0.0.1:{port} ssl backlog=4096;\n"
        f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
        f"        ssl_protocols TLSv1.2 TLSv1.3;\n"
        f"        ssl_session_tickets {'on' if resume else 'off'};\n        ssl_session_cache {cache};",
    )


def haproxy_config(port, echo_port, max_conns, pem, resume):
    base = peers.haproxy_config(port, echo_port, max_conns)
    base = base.replace("    nbthread 1\n", f"    nbthread 1\n    tune.ssl.cachesize {20000 if resume else 0}\n")
    tickets = "" if resume else " no-tls-tickets"
    return base.replace(
        f"    bind 127.0.0.1:{port}\n",
        f"    bind 127.0.0.1:{port} ssl crt {pem} alpn http/1.1{tickets}\n",
    )


class TlsBench(peers.Bench):
    def __init__(self, args):
        super().__init__(args)
        self.resume = False
        certs = os.path.join(self.work, "certs")
        subprocess.run([args.ringway, "cert", "self-signed", "--out", certs, "--name", "localhost"],
                       check=True, stdout=subprocess.DEVNULL)
        self.cert = os.path.join(certs, "cert.pem")
        self.key = os.path.join(certs, "key.pem")
        self.pem = os.path.join(certs, "combined.pem")
        with open(self.pem, "w") as out:
            for path in (self.cert, self.key):
                with open(path) as f:
                    out.write(f.read())

    def start_proxy(self, t):
        port, a, w = self.ports[t], self.a, self.work
        if t == "ringway":
            cfg = os.path.join(w, "ringway-tls.yaml")
            if getattr(self, "plain", False):
                # Ringway's own plain figure, same run, same load client: the wss overhead is the difference.
                peers.write(cfg, peers.ringway_config(port, self.echo_port, a.max_conns))
            else:
                peers.write(cfg, ringway_config(port, self.echo_port, a.max_conns, self.cert, self.key,
                                                self.resume))
            argv = [a.ringway, "--config", cfg, "--workers", "1", "--driver", a.ringway_driver]
        elif t == "nginx":
            os.makedirs(os.path.join(w, "nginx-tmp"), exist_ok=True)
            cfg = os.path.join(w, "nginx-tls.conf")
            peers.write(cfg, nginx_config(w, port, self.echo_port, a.max_conns, self.cert, self.key, self.resume))
            argv = ["nginx", "-c", cfg, "-p", w, "-e", os.path.join(w, "nginx-error.log")]
        else:
            cfg = os.path.join(w, "haproxy-tls.cfg")
            peers.write(cfg, haproxy_config(port, self.echo_port, a.max_conns, self.pem, self.resume))
            argv = ["haproxy", "-db", "-f", cfg]
        p = self.procs.start(t, argv, a.proxy_cpu)
        peers.wait_port(port, p)
        time.sleep(0.3)
        self.proxy[t] = p
        return p

    def url(self, t):
        if getattr(self, "plain", False):
            return f"ws://127.0.0.1:{self.ports[t]}/"
        return f"wss://localhost:{self.ports[t]}/"

    def load(self, t, scenario, rep, extra, duration, warmup):
        return super().load(t, scenario, rep, extra + ["--ca", self.cert], duration, warmup)

    def handshakes(self, t, rep, scenario):
        """N short connections (handshake, upgrade, one echo, close) as fast as the proxy takes them; proxy CPU over
        the whole run."""
        n = self.a.handshake_conns
        argv = [self.a.load, "--json", "--quiet", "--threads", "1", "--conns", str(n),
                "--messages-per-conn", "1", "--size", "64", "--duration", "60s", "--ca", self.cert, self.url(t)]
        # Paced (both scenarios alike, so they compare): resumed connections need tickets from earlier ones in the
        # client's session cache, and all at once every connection would start before the first ticket arrived.
        argv[-1:-1] = ["--ramp", str(self.a.handshake_ramp)]
        out_path = os.path.join(self.work, f"load-{scenario}-{t}-{rep}.json")
        self.wait_quiet()
        pids = self.target_pids(t)
        with open(out_path, "wb") as out:
            c0, t0 = peers.cpu_split(pids), time.monotonic()
            p = self.procs.start(f"load-{scenario}", argv, self.a.load_cpu, stdout=out)
            try:
                p.wait(90)
            except subprocess.TimeoutExpired:
                peers.log(f"{t} {scenario}: load generator did not finish, killing it")
            c1, t1 = peers.cpu_split(self.target_pids(t)), time.monotonic()
            self.procs.stop(p)
        res = peers.parse_json(out_path)
        cpu = ((c1[0] - c0[0]) + (c1[1] - c0[1])) / peers.CLK_TCK
        done = res.get("connected") or res.get("upgrades") or n
        run = {"target": t, "scenario": scenario, "rep": rep, "exit": p.returncode, **res,
               "proxy_cpu_s": cpu, "wall_s": t1 - t0,
               "handshakes_per_cpu_s": done / cpu if cpu else None}
        self.runs.append(run)
        peers.log(f"{scenario:<18} {t:<8} rep {rep}: {done} in {t1 - t0:.1f}s, proxy cpu {cpu:.2f}s = "
                  f"{run['handshakes_per_cpu_s'] or 0:.0f}/cpu-s, bad {peers.bad(run)}")
        time.sleep(0.5)
        return run

    def idle_tls(self, t, rep, scenario="idle_tls"):
        """RSS growth per idle wss connection, opened at --idle-ramp per second; the load generator is stopped
        after the reading (its TLS connect-only close does not finish: a ringway-load defect, see README)."""
        n, ramp = self.a.idle_conns, self.a.idle_ramp
        self.start_proxy(t)
        try:
            time.sleep(0.5)
            before = peers.rss_kib(self.target_pids(t))
            argv = [self.a.load, "--json", "--quiet", "--threads", "1", "--connect-only", "--conns", str(n),
                    "--warmup", "0s", "--duration", "30s", "--ramp", str(ramp), "--ca", self.cert, self.url(t)]
            self.wait_quiet()
            t0 = time.monotonic()
            p = self.procs.start("load-idle", argv, self.a.load_cpu)
            up = 0
            while time.monotonic() - t0 < n / ramp + 20:
                up = peers.established(local_port=self.ports[t])
                if up >= n and peers.established(remote_port=self.echo_port) >= n:
                    break
                time.sleep(0.2)
            time.sleep(2.5)
            after = peers.rss_kib(self.target_pids(t))
            self.procs.stop(p)
        finally:
            self.stop_proxy(t)
        run = {"target": t, "scenario": scenario, "rep": rep, "up": up, "rss_before_kib": before,
               "rss_after_kib": after, "kib_per_conn": (after - before) / n}
        self.runs.append(run)
        peers.log(f"{scenario:<10} {t:<8} rep {rep}: RSS {before} -> {after} KiB, {run['kib_per_conn']:.2f} KiB/conn, "
                  f"up {up} of {n}")
        time.sleep(1.0)
        return run

    def run(self):
        a = self.a
        self.start_echo()
        for t in PROXIES:
            self.start_proxy(t)
        for name, extra in (("64B", ["--conns", "100", "--size", "64"]),
                            ("16KiB", ["--conns", "50", "--size", "16KiB"])):
            for rep in range(a.repeats):
                for t in PROXIES:
                    self.load(t, name, rep, extra, a.duration, a.warmup)
        for rep in range(a.repeats):
            for t in PROXIES:
                self.handshakes(t, rep, "handshakes_full")
        for t in PROXIES:
            self.stop_proxy(t)
        self.resume = True
        for t in PROXIES:
            self.start_proxy(t)
        for rep in range(a.repeats):
            for t in PROXIES:
                self.handshakes(t, rep, "handshakes_resumed")
        for t in PROXIES:
            self.stop_proxy(t)
        self.resume = False
        if a.idle_conns > 0:
            for rep in range(a.repeats):
                for t in PROXIES:
                    self.idle_tls(t, rep)
            self.plain = True
            for rep in range(a.repeats):
                self.idle_tls("ringway", rep, "idle_plain")
            self.plain = False


def report(b, plain_idle=None):
    def med(scenario, t, key):
        v = b.values(scenario, t, key)
        return statistics.median(v) if v else None

    rows = [
        ("wss 64 B x 100: msgs per proxy CPU-s", "64B", "msgs_per_cpu_s", True, "{:,.0f}"),
        ("wss 16 KiB x 50: msgs per proxy CPU-s", "16KiB", "msgs_per_cpu_s", True, "{:,.0f}"),
        ("wss 64 B x 100: p99 latency (us)", "64B", "p99_us", False, "{:,.0f}"),
        ("full TLS 1.3 handshake + upgrade per proxy CPU-s", "handshakes_full", "handshakes_per_cpu_s", True,
         "{:,.0f}"),
        ("resumed handshake + upgrade per proxy CPU-s", "handshakes_resumed", "handshakes_per_cpu_s", True,
         "{:,.0f}"),
        ("KiB per idle wss connection (both legs)", "idle_tls", "kib_per_conn", False, "{:.2f}"),
    ]
    out = ["| figure | Ringway | nginx | HAProxy | Ringway vs better peer |", "|---|---:|---:|---:|---:|"]
    for label, scen, key, higher_better, fmt in rows:
        vals = {t: med(scen, t, key) for t in PROXIES}
        cells = [fmt.format(vals[t]) if vals[t] is not None else "-" for t in PROXIES]
        peers_v = [vals[t] for t in ("nginx", "haproxy") if vals[t]]
        ratio = "-"
        if vals["ringway"] and peers_v:
            best = max(peers_v) if higher_better else min(peers_v)
            ratio = f"{vals['ringway'] / best:.2f}x"
        out.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    wss, ws = med("idle_tls", "ringway", "kib_per_conn"), med("idle_plain", "ringway", "kib_per_conn")
    if wss is not None and ws is not None:
        out.append(f"| KiB per idle ws connection, Ringway plain (same run) | {ws:.2f} | - | - | - |")
        out.append(f"| wss minus ws, Ringway (target: within 2 KiB) | {wss - ws:.2f} | - | - | - |")
    bad_runs = [r for r in b.runs if peers.bad(r)]
    out.append("")
    out.append(f"Runs with errors, mismatches, unexpected closes or failed connects: {len(bad_runs)}"
               + ("" if not bad_runs else " (" + ", ".join(f"{r['scenario']}/{r['target']}" for r in bad_runs) + ")"))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ringway", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--idle-conns", type=int, default=6000)
    ap.add_argument("--idle-ramp", type=float, default=2000.0)
    ap.add_argument("--handshake-conns", type=int, default=2000)
    ap.add_argument("--handshake-ramp", type=int, default=1000)
    ap.add_argument("--max-conns", type=int, default=9500)
    ap.add_argument("--ringway-driver", default="auto", choices=["auto", "io_uring", "epoll"])
    ap.add_argument("--quiet-wait", type=float, default=10.0)
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--raw", required=True)
    # Bench.__init__ reads these (unused in TLS mode).
    ap.add_argument("--upgrade-conns", type=int, default=0)
    args = ap.parse_args()

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    os.sched_setaffinity(0, {args.load_cpu})
    b = TlsBench(args)
    b.rate = b.light_rate = None
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        b.run()
    finally:
        b.procs.stop_all()
    with open(args.raw, "w") as f:
        json.dump({"started": started.isoformat(timespec="seconds"), "args": vars(args), "runs": b.runs}, f, indent=1)
    print(report(b))


if __name__ == "__main__":
    main()
