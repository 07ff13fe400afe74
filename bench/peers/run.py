#!/usr/bin/env python3
"""Side-by-side WebSocket proxy benchmark: direct-to-echo, Ringway, nginx and HAProxy.

Owns the orchestration of bench/peers.sh: starts the echo upstream and the three proxies (one
worker each, pinned: proxies on core PROXY_CPU, echo + load generator on core LOAD_CPU), runs
every scenario against every target with repeats interleaved over the targets (so slow drift in
background load hits every target alike), samples each target's CPU time (utime+stime from
/proc/PID/stat of all its processes) inside the load generator's measurement window and its RSS
(VmRSS of all its processes) around idle connections, and writes a markdown report.

Every process it starts runs in its own session and is stopped in a `finally` (SIGTERM, then
SIGKILL); the process group ids are also appended to WORKDIR/pgids so the shell wrapper's trap can
clean up if this interpreter is killed outright.
"""

import argparse
import datetime
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = ["direct", "ringway", "nginx", "haproxy"]
PROXIES = ["ringway", "nginx", "haproxy"]
LABEL = {"direct": "direct", "ringway": "Ringway", "nginx": "nginx", "haproxy": "HAProxy"}


def log(msg):
    print(f"[peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# /proc readers


def descendants(pid):
    """pid and every live descendant of it."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_split(pids):
    """(utime, stime) in clock ticks summed over pids (all threads of each)."""
    user = system = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        user += int(fields[11])  # field 14 of stat(5)
        system += int(fields[12])  # field 15
    return user, system


def cpu_ticks(pids):
    """utime + stime (clock ticks) summed over pids."""
    return sum(cpu_split(pids))


def busy_ticks():
    """Busy clock ticks (everything but idle and iowait) summed over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is in user.
    return sum(fields[:8]) - fields[3] - fields[4]


def rss_kib(pids):
    """VmRSS (KiB) summed over pids."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def established(local_port=None, remote_port=None):
    """Established TCP connections (IPv4) with the given local and/or remote port."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] != "01":
                continue
            if local_port is not None and int(parts[1].rsplit(":", 1)[1], 16) != local_port:
                continue
            if remote_port is not None and int(parts[2].rsplit(":", 1)[1], 16) != remote_port:
                continue
            n += 1
    return n


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


# ---------------------------------------------------------------------------------------------
# processes


class Procs:
    """Every process the bench started; all stopped by stop_all()."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, name, argv, cpu, **kw):
        cmd = ["taskset", "-c", str(cpu)] + argv
        out = open(os.path.join(self.workdir, f"{name}.log"), "ab")
        p = subprocess.Popen(
            cmd, stdout=kw.pop("stdout", out), stderr=out, start_new_session=True, **kw
        )
        with open(os.path.join(self.workdir, "pgids"), "a") as f:
            f.write(f"{p.pid}\n")
        self.procs.append((name, p))
        return p

    def stop(self, p, grace=3.0):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        # Reap strays in the group (nginx workers) too.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.procs = [(n, q) for (n, q) in self.procs if q is not p]

    def stop_all(self):
        for _, p in list(reversed(self.procs)):
            self.stop(p)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def ringway_config(port, echo_port, max_conns):
    return f"""# Generated by bench/peers/run.py: one worker, no gateway pings, long idle timeout.
workers: 1
listeners:
  - name: bench
    bind: 127.0.0.1:{port}
limits:
  max_connections: {max_conns}
upstreams:
  echo:
    servers: [127.0.0.1:{echo_port}]
routes:
  - path: /
    upstream: echo
    websocket:
      idle_timeout: 1h
      ping_interval: off
      max_frame_size: 1MiB
      max_message_size: 1MiB
"""


def nginx_config(workdir, port, echo_port, max_conns):
    return f"""# Generated by bench/peers/run.py: production-style WebSocket proxying, one worker.
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{
    # 2 per proxied connection plus headroom: nginx starts closing connections that have not yet
    # sent their request ("worker_connections are not enough, reusing connections") once fewer
    # than 1/16 of the slots are free. File descriptors stay capped by worker_rlimit_nofile.
    worker_connections {2 * max_conns + 5000};
}}
http {{
    access_log off;
    client_body_temp_path {workdir}/nginx-tmp/body;
    proxy_temp_path {workdir}/nginx-tmp/proxy;
    fastcgi_temp_path {workdir}/nginx-tmp/fastcgi;
    uwsgi_temp_path {workdir}/nginx-tmp/uwsgi;
    scgi_temp_path {workdir}/nginx-tmp/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream echo {{
        server 127.0.0.1:{echo_port};
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"""


def haproxy_config(port, echo_port, max_conns):
    return f"""# Generated by bench/peers/run.py: production-style WebSocket proxying, one thread.
global
    nbthread 1
    maxconn {max_conns}
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-request 10s
    maxconn {max_conns}
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server echo 127.0.0.1:{echo_port}
"""


def proxy_argv(t, work, port, echo_port, max_conns, ringway, driver, single_process=False):
    """Writes target t's config into work and returns its command line (listening on port, proxying to the echo
    upstream on echo_port). single_process: nginx without its master process, so that all of its work happens in
    the process started (for tools that follow one process, such as valgrind)."""
    if t == "ringway":
        cfg = os.path.join(work, "ringway.yaml")
        write(cfg, ringway_config(port, echo_port, max_conns))
        return [ringway, "--config", cfg, "--workers", "1", "--driver", driver]
    if t == "nginx":
        os.makedirs(os.path.join(work, "nginx-tmp"), exist_ok=True)
        cfg = os.path.join(work, "nginx.conf")
        text = nginx_config(work, port, echo_port, max_conns)
        if single_process:
            text = text.replace("worker_processes 1;", "worker_processes 1;\nmaster_process off;")
        write(cfg, text)
        return ["nginx", "-c", cfg, "-p", work, "-e", os.path.join(work, "nginx-error.log")]
    if t == "haproxy":
        cfg = os.path.join(work, "haproxy.cfg")
        write(cfg, haproxy_config(port, echo_port, max_conns))
        return ["haproxy", "-db", "-f", cfg]
    raise ValueError(t)


class Bench:
    def __init__(self, args):
        self.a = args
        self.work = args.workdir
        self.procs = Procs(self.work)
        self.ports = {t: free_port() for t in TARGETS}
        self.echo_port = self.ports["direct"]
        self.proxy = {}  # target -> Popen
        self.runs = []  # every load run: dict

    # -- lifecycle ------------------------------------------------------------------------------

    def start_echo(self):
        p = self.procs.start(
            "echo",
            [self.a.load, "echo", "--threads", "1", "--listen", f"127.0.0.1:{self.echo_port}"],
            self.a.load_cpu,
        )
        wait_port(self.echo_port, p)
        self.echo = p

    def start_proxy(self, t):
        port = self.ports[t]
        argv = proxy_argv(t, self.work, port, self.echo_port, self.a.max_conns, self.a.ringway, self.a.ringway_driver)
        p = self.procs.start(t, argv, self.a.proxy_cpu)
        wait_port(port, p)
        time.sleep(0.3)  # let nginx fork its worker
        self.proxy[t] = p
        return p

    def stop_proxy(self, t):
        p = self.proxy.pop(t, None)
        if p is not None:
            self.procs.stop(p)

    def target_pids(self, t):
        if t == "direct":
            return [self.echo.pid]
        return descendants(self.proxy[t].pid)

    def url(self, t):
        return f"ws://127.0.0.1:{self.ports[t]}/"

    # -- one load run ---------------------------------------------------------------------------

    def wait_quiet(self):
        """Waits (at most --quiet-wait s) until other processes use under 15% of a core over 0.5 s:
        the machine may be shared, and nothing of ours runs between load runs."""
        deadline = time.monotonic() + self.a.quiet_wait
        waited = 0.0
        while True:
            b0, t0 = busy_ticks(), time.monotonic()
            time.sleep(0.5)
            pct = 100 * (busy_ticks() - b0) / CLK_TCK / (time.monotonic() - t0)
            if pct < 15 or time.monotonic() >= deadline:
                if waited:
                    log(f"waited {waited:.1f}s for other processes to quiet down (now {pct:.0f}% of a core)")
                return
            waited += 0.5

    def load(self, t, scenario, rep, extra, duration, warmup):
        """One ringway-load run with CPU sampled inside its measurement window."""
        argv = [self.a.load, "--json", "--quiet", "--threads", "1",
                "--duration", f"{duration}s", "--warmup", f"{warmup}s"] + extra + [self.url(t)]
        out_path = os.path.join(self.work, f"load-{scenario}-{t}-{rep}.json")
        self.wait_quiet()
        with open(out_path, "wb") as out:
            t0 = time.monotonic()
            p = self.procs.start(f"load-{scenario}", argv, self.a.load_cpu, stdout=out)
            pids = self.target_pids(t)
            margin = min(0.2, duration / 10)
            time.sleep(max(0.0, t0 + warmup + margin - time.monotonic()))
            c0 = (cpu_split(pids), cpu_ticks([self.echo.pid]), cpu_ticks([p.pid]), time.monotonic(),
                  busy_ticks())
            time.sleep(max(0.0, t0 + warmup + duration - margin - time.monotonic()))
            c1 = (cpu_split(pids), cpu_ticks([self.echo.pid]), cpu_ticks([p.pid]), time.monotonic(),
                  busy_ticks())
            try:
                p.wait(duration + warmup + 30)
            except subprocess.TimeoutExpired:
                log(f"{t} {scenario}: load generator did not finish, killing it")
            self.procs.stop(p)
        res = parse_json(out_path)
        window = c1[3] - c0[3]
        run = {"target": t, "scenario": scenario, "rep": rep, "exit": p.returncode,
               "window_s": window, **res}
        user, system = c1[0][0] - c0[0][0], c1[0][1] - c0[0][1]
        run["proxy_cpu_s"] = (user + system) / CLK_TCK if t != "direct" else None
        run["proxy_sys_pct"] = 100 * system / (user + system) if t != "direct" and user + system else None
        run["echo_cpu_s"] = (c1[1] - c0[1]) / CLK_TCK
        run["load_cpu_s"] = (c1[2] - c0[2]) / CLK_TCK
        run["proxy_core_pct"] = 100 * run["proxy_cpu_s"] / window if t != "direct" else None
        run["core0_pct"] = 100 * (run["echo_cpu_s"] + run["load_cpu_s"]) / window
        ours = (user + system if t != "direct" else 0) + (c1[1] - c0[1]) + (c1[2] - c0[2])
        # CPU time every other process on the machine took in the window (% of one core): other
        # jobs sharing the machine, this driver's polling, kernel threads.
        run["other_pct"] = max(0.0, 100 * ((c1[4] - c0[4]) - ours) / CLK_TCK / window)
        if t != "direct" and run["proxy_cpu_s"] and res.get("msgs_per_sec"):
            run["msgs_per_cpu_s"] = res["msgs_per_sec"] * window / run["proxy_cpu_s"]
        else:
            run["msgs_per_cpu_s"] = None
        self.runs.append(run)
        log(f"{scenario:<10} {t:<8} rep {rep}: {res.get('msgs_per_sec', 0):>10.0f} msg/s  "
            f"p50 {res.get('p50_us', 0):.0f}us p99 {res.get('p99_us', 0):.0f}us  "
            f"proxy cpu {run['proxy_core_pct'] or 0:.0f}%  core0 {run['core0_pct']:.0f}%  "
            f"others {run['other_pct']:.0f}%  "
            f"bad {bad(run)}")
        return run

    def upgrades(self, t, rep):
        argv = [self.a.load, "--json", "--quiet", "--threads", "1", "--connect-only",
                "--conns", str(self.a.upgrade_conns), "--warmup", "0s", "--duration", "1s"]
        out_path = os.path.join(self.work, f"load-upgrades-{t}-{rep}.json")
        self.wait_quiet()
        with open(out_path, "wb") as out:
            p = self.procs.start("load-upgrades", argv + [self.url(t)], self.a.load_cpu, stdout=out)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                log(f"{t} upgrades: load generator did not finish, killing it")
            self.procs.stop(p)
        res = parse_json(out_path)
        run = {"target": t, "scenario": "upgrades", "rep": rep, "exit": p.returncode, **res}
        self.runs.append(run)
        log(f"upgrades   {t:<8} rep {rep}: {res.get('upgrades_per_sec', 0):>10.0f} upgrades/s "
            f"connected {res.get('connected')}/{self.a.upgrade_conns} bad {bad(run)}")
        # Let the closes settle before the next target connects.
        time.sleep(0.5)
        return run

    def idle(self, t, rep, ramp=0):
        """RSS growth of a fresh proxy holding N idle proxied connections, opened as fast as
        possible (ramp 0) or paced at `ramp` connections per second."""
        n = self.a.idle_conns
        scenario = "idle" if ramp == 0 else "idle_paced"
        self.start_proxy(t)
        try:
            time.sleep(0.5)
            pids = self.target_pids(t)
            before = rss_kib(pids)
            hold = self.a.idle_hold
            argv = [self.a.load, "--json", "--quiet", "--threads", "1", "--connect-only",
                    "--conns", str(n), "--warmup", "0s", "--duration", f"{hold}s",
                    "--ramp", str(ramp)]
            hold += n / ramp if ramp else 0.0  # the hold starts after the ramp
            out_path = os.path.join(self.work, f"load-{scenario}-{t}-{rep}.json")
            self.wait_quiet()
            with open(out_path, "wb") as out:
                t0 = time.monotonic()
                p = self.procs.start("load-idle", argv + [self.url(t)], self.a.load_cpu, stdout=out)
                up_client = up_upstream = 0
                while time.monotonic() - t0 < hold - 1.0:
                    up_client = established(local_port=self.ports[t])
                    up_upstream = established(remote_port=self.echo_port)
                    if up_client >= n and up_upstream >= n:
                        break
                    time.sleep(0.1)
                # Read twice: allocators keep handshake-time memory a while; the settled figure
                # (2.5 s after the last connection came up) is the one reported.
                time.sleep(0.5)
                early = rss_kib(self.target_pids(t))
                time.sleep(2.0)
                pids = self.target_pids(t)
                after = rss_kib(pids)
                nprocs = len(pids)
                try:
                    p.wait(hold + 30)
                except subprocess.TimeoutExpired:
                    log(f"{t} idle: load generator did not finish, killing it")
                self.procs.stop(p)
            res = parse_json(out_path)
        finally:
            self.stop_proxy(t)
        run = {"target": t, "scenario": scenario, "rep": rep, "exit": p.returncode, **res,
               "rss_before_kib": before, "rss_early_kib": early, "rss_after_kib": after, "procs": nprocs,
               "up_client": up_client, "up_upstream": up_upstream,
               "kib_per_conn": (after - before) / n}
        self.runs.append(run)
        log(f"{scenario:<10} {t:<8} rep {rep}: RSS {before} -> {early} -> {after} KiB over {nprocs} procs, "
            f"{run['kib_per_conn']:.2f} KiB/conn, up {up_client}/{up_upstream} of {n}, "
            f"connected {res.get('connected')} bad {bad(run)}")
        time.sleep(1.0)
        return run

    # -- the whole bench ------------------------------------------------------------------------

    def run(self):
        a = self.a
        self.start_echo()
        for t in PROXIES:
            self.start_proxy(t)
        scen = [
            ("64B", ["--conns", "100", "--size", "64"]),
            ("16KiB", ["--conns", "50", "--size", "16KiB"]),
        ]
        for name, extra in scen:
            for rep in range(a.repeats):
                for t in TARGETS:
                    self.load(t, name, rep, extra, a.duration, a.warmup)
        rate = a.rate
        if not rate:
            slowest = min(self.median("64B", t, "msgs_per_sec") or 0 for t in PROXIES)
            rate = max(1000, int(slowest * a.rate_fraction) // 1000 * 1000)
        self.rate = rate
        # A second, lighter rate: half the first. Proxies in production mostly run well below half a core, and the
        # latency a proxy adds depends on how busy its core is.
        self.light_rate = a.light_rate or max(1000, rate // 2 // 1000 * 1000)
        for scenario, r in (("open", rate), ("open_light", self.light_rate)):
            log(f"open-loop rate ({scenario}): {r} msg/s")
            for rep in range(a.repeats):
                for t in TARGETS:
                    self.load(t, scenario, rep, ["--conns", "100", "--size", "64", "--rate", str(r)],
                              a.duration, a.warmup)
        for rep in range(a.repeats):
            for t in TARGETS:
                self.upgrades(t, rep)
        for t in PROXIES:
            self.stop_proxy(t)
        if a.idle_conns > 0:
            for rep in range(a.repeats):
                for t in PROXIES:
                    self.idle(t, rep)
            if a.idle_ramp > 0:
                for rep in range(a.repeats):
                    for t in PROXIES:
                        self.idle(t, rep, a.idle_ramp)

    def values(self, scenario, t, key):
        return [r[key] for r in self.runs
                if r["scenario"] == scenario and r["target"] == t and r.get(key) is not None]

    def median(self, scenario, t, key):
        v = self.values(scenario, t, key)
        return statistics.median(v) if v else None


def parse_json(path):
    try:
        with open(path) as f:
            lines = [ln for ln in f.read().splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


def bad(run):
    return sum(run.get(k, 0) or 0 for k in
               ("errors", "mismatches", "unexpected_closes", "connect_failures", "lost"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ringway", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rate", type=int, default=0, help="open-loop rate; 0: a fraction of the slowest proxy")
    ap.add_argument("--rate-fraction", type=float, default=0.5)
    ap.add_argument("--light-rate", type=int, default=0, help="second open-loop rate; 0: half the first")
    ap.add_argument("--idle-conns", type=int, default=9000)
    ap.add_argument("--idle-hold", type=float, default=8.0)
    ap.add_argument("--idle-ramp", type=float, default=2000.0,
                    help="also measure idle memory with connections paced at this many per second; 0: skip")
    ap.add_argument("--upgrade-conns", type=int, default=3000)
    ap.add_argument("--max-conns", type=int, default=9500)
    ap.add_argument("--ringway-driver", default="auto", choices=["auto", "io_uring", "epoll"])
    ap.add_argument("--quiet-wait", type=float, default=10.0,
                    help="before each run, wait up to this long for other processes to go idle")
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--raw", required=True, help="write every run as JSON here")
    args = ap.parse_args()

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    os.sched_setaffinity(0, {args.load_cpu})
    b = Bench(args)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        b.run()
    finally:
        b.procs.stop_all()
    try:
        with open(os.path.join(args.workdir, "ringway.log")) as f:
            uring = [re.sub(r"\x1b\[[0-9;]*m", "", ln) for ln in f if "io_uring" in ln]
        ringway_driver = ("io_uring" if "io_uring=true" in uring[-1] else "epoll") if uring else "?"
    except OSError:
        ringway_driver = "?"
    finished = datetime.datetime.now(datetime.timezone.utc)
    with open(args.raw, "w") as f:
        json.dump({"started": started.isoformat(timespec="seconds"),
                   "finished": finished.isoformat(timespec="seconds"),
                   "args": vars(args), "rate": b.rate, "light_rate": b.light_rate,
                   "ringway_driver": ringway_driver, "runs": b.runs}, f, indent=1)
    log(f"raw results in {args.raw}")


if __name__ == "__main__":
    main()
