#!/usr/bin/env python3
"""Turns the raw JSON of bench/peers/run.py into the markdown report of bench/peers.sh.

Every figure is the median over the repeats with the spread (min-max) beside it; ratios are of
medians. Anomalies (errors of any kind, an open-loop rate a target did not reach, idle connections
that did not all come up, a saturated load-generator core) are listed under the tables.

Usage: report.py RAW.json --command CMD --machine-file FILE > report.md
"""

import argparse
import json
import statistics

TARGETS = ["direct", "ringway", "nginx", "haproxy"]
PROXIES = ["ringway", "nginx", "haproxy"]
LABEL = {"direct": "direct", "ringway": "Ringway", "nginx": "nginx", "haproxy": "HAProxy"}
BAD_KEYS = ("errors", "mismatches", "unexpected_closes", "connect_failures", "lost")


def si(v, digits=1):
    if v is None:
        return "n/a"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.{digits + 1}f}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.{digits}f}k"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


def us_split(d, scen, t):
    """Median proxy CPU per echoed message in µs, split into user + kernel."""
    per = [1e6 / v for v in d.values(scen, t, "msgs_per_cpu_s") if v]
    sys_pct = d.values(scen, t, "proxy_sys_pct")
    if not per or not sys_pct:
        return "n/a"
    m, k = statistics.median(per), statistics.median(sys_pct) / 100
    return f"{m:.1f} = {m * (1 - k):.1f} + {m * k:.1f}"


class Data:
    def __init__(self, raw):
        self.raw = raw
        self.runs = raw["runs"]
        # CPU the load side spent per echoed message (core 0), to compare with the proxy's.
        for r in self.runs:
            n = (r.get("msgs_per_sec") or 0) * (r.get("window_s") or 0)
            for side in ("load", "echo"):
                if n and r.get(f"{side}_cpu_s") is not None:
                    r[f"{side}_us_per_msg"] = r[f"{side}_cpu_s"] * 1e6 / n

    def values(self, scenario, t, key):
        return [r[key] for r in self.runs
                if r["scenario"] == scenario and r["target"] == t and r.get(key) is not None]

    def median(self, scenario, t, key):
        v = self.values(scenario, t, key)
        return statistics.median(v) if v else None

    def best(self, scenario, t, key):
        """The highest value over the repeats (for figures where higher is better)."""
        v = self.values(scenario, t, key)
        return max(v) if v else None

    def cell(self, scenario, t, key, fmt=si, scale=1.0):
        v = [x * scale for x in self.values(scenario, t, key)]
        if not v:
            return "n/a"
        m = statistics.median(v)
        if len(v) == 1:
            return fmt(m)
        return f"{fmt(m)} ({fmt(min(v))}–{fmt(max(v))})"

    def added(self, scenario, t, key):
        """Median of target minus median of direct, with spread from the target's own min-max."""
        d = self.median(scenario, "direct", key)
        v = self.values(scenario, t, key)
        if d is None or not v:
            return "n/a"
        m = statistics.median(v) - d
        if len(v) == 1:
            return f"{m:+.0f}"
        return f"{m:+.0f} ({min(v) - d:+.0f}…{max(v) - d:+.0f})"

    def load_side_us(self, scenario, t):
        """Median load generator / echo upstream CPU per echoed message in µs."""
        load, echo = self.median(scenario, t, "load_us_per_msg"), self.median(scenario, t, "echo_us_per_msg")
        if load is None or echo is None:
            return "n/a"
        return f"{load:.1f} / {echo:.1f}"

    def bad_total(self, scenario, t):
        return sum(sum(r.get(k, 0) or 0 for k in BAD_KEYS) for r in self.runs
                   if r["scenario"] == scenario and r["target"] == t)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def open_loop_section(p, d, head, sep, scen, rate, how):
    """The table of one fixed-rate open-loop scenario."""
    p(f"## Latency at a fixed open-loop rate ({rate} msg/s, 64 B, 100 conns)")
    p("")
    p(f"Rate: {how}. Latency from each message's intended send time (coordinated-omission "
      "corrected; the load generator's timer adds up to ~1 ms, the same for every target, so read "
      "the *added* rows). Service time: from when the load generator actually wrote each message — "
      "without its own timer slack, so it resolves what a proxy adds more finely.")
    p("")
    p(head)
    p(sep)
    p("| achieved msg/s | " + " | ".join(d.cell(scen, t, "msgs_per_sec") for t in TARGETS) + " |")
    for key, name in (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")):
        p(f"| {name} (µs) | " + " | ".join(d.cell(scen, t, key) for t in TARGETS) + " |")
    for key, name in (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")):
        p(f"| added {name} over direct (µs) | "
          + " | ".join("—" if t == "direct" else d.added(scen, t, key) for t in TARGETS) + " |")
    service = (("service_p50_us", "p50"), ("service_p99_us", "p99"), ("service_p999_us", "p99.9"))
    for key, name in service:
        p(f"| service time {name} (µs) | " + " | ".join(d.cell(scen, t, key) for t in TARGETS) + " |")
    for key, name in service:
        p(f"| added service time {name} over direct (µs) | "
          + " | ".join("—" if t == "direct" else d.added(scen, t, key) for t in TARGETS) + " |")
    p("| msgs per proxy CPU-second | " + " | ".join(d.cell(scen, t, "msgs_per_cpu_s") for t in TARGETS) + " |")
    p("| proxy CPU (% of its core) | "
      + " | ".join(d.cell(scen, t, "proxy_core_pct", lambda v: f"{v:.0f}") for t in TARGETS) + " |")
    p("| proxy CPU per echoed message, µs (user + kernel) | "
      + " | ".join(us_split(d, scen, t) for t in TARGETS) + " |")
    p("| share of proxy CPU in the kernel (%) | "
      + " | ".join(d.cell(scen, t, "proxy_sys_pct", lambda v: f"{v:.0f}") for t in TARGETS) + " |")
    p("| other processes' CPU (% of one core) | "
      + " | ".join(d.cell(scen, t, "other_pct", lambda v: f"{v:.0f}") for t in TARGETS) + " |")
    p("| errors (all repeats) | " + " | ".join(str(d.bad_total(scen, t)) for t in TARGETS) + " |")
    p("")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("--command", required=True)
    ap.add_argument("--machine-file", required=True)
    args = ap.parse_args()
    with open(args.raw) as f:
        raw = json.load(f)
    with open(args.machine_file) as f:
        machine = f.read().rstrip("\n")
    d = Data(raw)
    a = raw["args"]
    reps, dur = a["repeats"], a["duration"]
    rate = raw.get("rate")
    out = []
    p = out.append
    head = "| metric | " + " | ".join(LABEL[t] for t in TARGETS) + " |"
    sep = "|---|" + "---:|" * len(TARGETS)

    p("# Ringway vs nginx vs HAProxy: WebSocket proxy side by side")
    p("")
    p(f"Command: `{args.command}`")
    p("")
    p(f"Run: {raw['started']} to {raw['finished']}, {reps} repeat(s) × {dur:g} s "
      f"(+{a['warmup']:g} s warm-up) per figure; cells are **median (min–max)** over the repeats, "
      f"repeats interleaved over the targets; before each run the bench waited up to {a.get('quiet_wait', 0):g} s "
      "for other processes to go idle (the 'other processes' CPU' rows show what they still took).")
    p("")
    p(machine)
    p("")
    p("Setup: echo upstream `ringway-load echo --threads 1` and the load generator `ringway-load "
      f"--threads 1` pinned to core {a['load_cpu']}; each proxy alone on core {a['proxy_cpu']} "
      "(`taskset`), one worker each (Ringway `--workers 1`, nginx `worker_processes 1`, HAProxy "
      f"`nbthread 1`), loopback only. Ringway runtime driver: {raw.get('ringway_driver', '?')} "
      f"(`--driver {a.get('ringway_driver', 'auto')}`). nginx: `proxy_http_version 1.1`, Upgrade/Connection "
      "headers, `proxy_read_timeout 1h`, `access_log off`, `worker_connections` = 2 × max conns + 5000; "
      "HAProxy: `mode http`, `timeout tunnel 1h`; Ringway: `ping_interval: off`, `idle_timeout: 1h`, "
      "1 MiB frame/message limits. Configs: bench/peers/run.py (written out at run time). "
      "Direct = the load generator talks to the echo upstream itself (no proxy hop).")
    p("")

    p("## Throughput and efficiency (closed loop, 1 message in flight per connection)")
    p("")
    p(head)
    p(sep)
    for scen, title in (("64B", "64 B × 100 conns"), ("16KiB", "16 KiB × 50 conns")):
        p(f"| **{title}**: msg/s | " + " | ".join(d.cell(scen, t, "msgs_per_sec") for t in TARGETS) + " |")
        p(f"| {title}: msgs per proxy CPU-second | "
          + " | ".join(d.cell(scen, t, "msgs_per_cpu_s") for t in TARGETS) + " |")
        p(f"| {title}: proxy CPU (% of its core) | "
          + " | ".join(d.cell(scen, t, "proxy_core_pct", lambda v: f"{v:.0f}") for t in TARGETS) + " |")
        p(f"| {title}: proxy CPU per echoed message, µs (user + kernel) | "
          + " | ".join(us_split(d, scen, t) for t in TARGETS) + " |")
        p(f"| {title}: share of proxy CPU in the kernel (%) | "
          + " | ".join(d.cell(scen, t, "proxy_sys_pct", lambda v: f"{v:.0f}") for t in TARGETS) + " |")
        p(f"| {title}: load generator / echo upstream CPU per echoed message, µs | "
          + " | ".join(d.load_side_us(scen, t) for t in TARGETS) + " |")
        p(f"| {title}: core {a['load_cpu']} busy (echo + load gen, %) | "
          + " | ".join(d.cell(scen, t, "core0_pct", lambda v: f"{v:.0f}") for t in TARGETS) + " |")
        p(f"| {title}: other processes' CPU (% of one core) | "
          + " | ".join(d.cell(scen, t, "other_pct", lambda v: f"{v:.0f}") for t in TARGETS) + " |")
        p(f"| {title}: p50 / p99 latency (µs) | "
          + " | ".join(f"{si(d.median(scen, t, 'p50_us'))} / {si(d.median(scen, t, 'p99_us'))}"
                       for t in TARGETS) + " |")
        p(f"| {title}: errors (all repeats) | "
          + " | ".join(str(d.bad_total(scen, t)) for t in TARGETS) + " |")
    p("")

    light_rate = raw.get("light_rate")
    for scen, r, how in (
            ("open", rate, "fixed by --rate" if a.get("rate") else
             f"{a['rate_fraction']:.0%} of the slowest proxy's median closed-loop 64 B msg/s in this run, "
             "rounded down to 1000"),
            ("open_light", light_rate, "fixed by --light-rate" if a.get("light_rate") else
             "half the rate above, rounded down to 1000: how much a proxy adds depends on how busy its core is")):
        if r and d.values(scen, "direct", "msgs_per_sec"):
            open_loop_section(p, d, head, sep, scen, r, how)

    n_idle = a["idle_conns"]
    p(f"## Connections: memory per idle connection and upgrades per second")
    p("")
    p(head)
    p(sep)
    ramp = a.get("idle_ramp") or 0
    for scen, how in (("idle", "opened as fast as possible"), ("idle_paced", f"opened at {ramp:g}/s")):
        if scen == "idle_paced" and not ramp:
            continue
        p(f"| KiB per idle proxied connection (N = {n_idle}, {how}) | "
          + " | ".join("—" if t == "direct" else d.cell(scen, t, "kib_per_conn", lambda v: f"{v:.2f}")
                       for t in TARGETS) + " |")
        p(f"| proxy RSS before → with N idle, {how} (MiB) | "
          + " | ".join("—" if t == "direct" else
                       f"{si((d.median(scen, t, 'rss_before_kib') or 0) / 1024)} → "
                       f"{si((d.median(scen, t, 'rss_after_kib') or 0) / 1024)}" for t in TARGETS) + " |")
    p(f"| upgrades/s ({a['upgrade_conns']} new connections, as fast as possible) | "
      + " | ".join(d.cell("upgrades", t, "upgrades_per_sec") for t in TARGETS) + " |")
    p(f"| upgrades/s while opening the N = {n_idle} idle connections | "
      + " | ".join("—" if t == "direct" else d.cell("idle", t, "upgrades_per_sec") for t in TARGETS) + " |")
    p("| connect failures (all repeats) | "
      + " | ".join(str(d.bad_total("upgrades", t) + d.bad_total("idle", t) + d.bad_total("idle_paced", t))
                   for t in TARGETS) + " |")
    p("")
    p(f"Idle memory: a fresh proxy per repeat; RSS = sum of VmRSS (/proc/PID/status) over all the "
      f"target's processes (nginx master + worker), read before connecting and once all N client "
      f"and N upstream connections are established and 2.5 s more have passed (to let allocators settle; "
      f"the +0.5 s reading is in the raw JSON as rss_early_kib). N = {n_idle}, not 10,000: this "
      "machine's hard RLIMIT_NOFILE is 20,000 per process and a proxy holds 2 fds per connection. "
      "The figure covers both legs in user space; kernel socket buffers are not in RSS. "
      "Burst vs paced: opened as fast as possible, RSS also keeps whatever the proxy allocated for the "
      "handshakes in flight at the peak (and did not give back to the OS); paced, the figure is closer "
      "to what an established idle connection costs. "
      f"Upgrades/s = connections upgraded / time from the start of `ringway-load --connect-only` to the "
      "last 101 (one load-generator thread on core 0, which also runs the echo upstream).")
    p("")

    p("## Ratios (of medians unless stated)")
    p("")
    p("| metric | Ringway/nginx | Ringway/HAProxy | Ringway/direct |")
    p("|---|---:|---:|---:|")

    def ratio_row(name, scen, key, direct=True, of=d.median):
        r = of(scen, "ringway", key)
        p(f"| {name} | {ratio(r, of(scen, 'nginx', key))} | "
          f"{ratio(r, of(scen, 'haproxy', key))} | "
          f"{ratio(r, of(scen, 'direct', key)) if direct else '—'} |")

    ratio_row("64 B msg/s", "64B", "msgs_per_sec")
    ratio_row("64 B msgs per proxy CPU-s", "64B", "msgs_per_cpu_s", direct=False)
    ratio_row("16 KiB msg/s", "16KiB", "msgs_per_sec")
    ratio_row("16 KiB msgs per proxy CPU-s", "16KiB", "msgs_per_cpu_s", direct=False)
    ratio_row(f"open loop msgs per proxy CPU-s ({rate}/s)", "open", "msgs_per_cpu_s", direct=False)

    # Interference from other tenants of a shared machine only ever slows a run down, so each target's best repeat
    # is its least disturbed one: a second view of efficiency that one unlucky repeat cannot swing.
    ratio_row("64 B msgs per proxy CPU-s, best repeat of each", "64B", "msgs_per_cpu_s", direct=False, of=d.best)
    ratio_row("16 KiB msgs per proxy CPU-s, best repeat of each", "16KiB", "msgs_per_cpu_s", direct=False,
              of=d.best)
    ratio_row(f"open loop p99 at {rate}/s (µs, lower is better)", "open", "p99_us")
    ratio_row(f"open loop service-time p99 at {rate}/s (µs, lower is better)", "open", "service_p99_us")
    if light_rate and d.values("open_light", "ringway", "msgs_per_sec"):
        ratio_row(f"open loop msgs per proxy CPU-s ({light_rate}/s)", "open_light", "msgs_per_cpu_s", direct=False)
        ratio_row(f"open loop p99 at {light_rate}/s (µs, lower is better)", "open_light", "p99_us")
        ratio_row(f"open loop service-time p99 at {light_rate}/s (µs, lower is better)", "open_light",
                  "service_p99_us")
    ratio_row("KiB per idle connection, burst (lower is better)", "idle", "kib_per_conn", direct=False)
    if ramp:
        ratio_row("KiB per idle connection, paced (lower is better)", "idle_paced", "kib_per_conn", direct=False)
    ratio_row("upgrades/s", "upgrades", "upgrades_per_sec")
    p("")

    anomalies = []
    for r in d.runs:
        n = sum(r.get(k, 0) or 0 for k in BAD_KEYS)
        if n or (r.get("exit") not in (0, None)):
            anomalies.append(
                f"{LABEL[r['target']]} {r['scenario']} repeat {r['rep'] + 1}: exit {r.get('exit')}, "
                + ", ".join(f"{k} {r.get(k, 0)}" for k in BAD_KEYS if r.get(k)))
        target_rate = {"open": rate, "open_light": light_rate}.get(r["scenario"])
        if target_rate and (r.get("msgs_per_sec") or 0) < 0.97 * target_rate:
            anomalies.append(f"{LABEL[r['target']]} open loop repeat {r['rep'] + 1}: reached only "
                             f"{r.get('msgs_per_sec', 0):.0f} of {target_rate} msg/s")
        if r["scenario"].startswith("idle") and min(r.get("up_client") or 0, r.get("up_upstream") or 0) < n_idle:
            anomalies.append(f"{LABEL[r['target']]} idle repeat {r['rep'] + 1}: RSS read with only "
                             f"{r.get('up_client')} client-side and {r.get('up_upstream')} upstream "
                             f"connections established of {n_idle} (KiB/conn understated)")
        if r["scenario"].startswith("idle") and (r.get("connected") or 0) < n_idle:
            anomalies.append(f"{LABEL[r['target']]} idle repeat {r['rep'] + 1}: only "
                             f"{r.get('connected')} of {n_idle} connections up "
                             f"(client-side established {r.get('up_client')}, upstream {r.get('up_upstream')})")
        if r["scenario"] in ("64B", "16KiB") and r["target"] != "direct" and (r.get("core0_pct") or 0) > 90 \
                and (r.get("proxy_core_pct") or 0) < 90:
            anomalies.append(f"{LABEL[r['target']]} {r['scenario']} repeat {r['rep'] + 1}: core "
                             f"{a['load_cpu']} (echo + load generator) {r['core0_pct']:.0f}% busy, proxy "
                             f"only {r['proxy_core_pct']:.0f}%: the load side, not the proxy, limited msg/s")
    for r in d.runs:
        if (r.get("other_pct") or 0) > 15:
            anomalies.append(f"{LABEL[r['target']]} {r['scenario']} repeat {r['rep'] + 1}: other processes "
                             f"took {r['other_pct']:.0f}% of a core during the window (shared machine): "
                             "this run's msg/s and latency are not comparable; msgs per proxy CPU-s less affected")
    p("## Anomalies")
    p("")
    if anomalies:
        for x in anomalies:
            p(f"- {x}")
    else:
        p("- none: every run was clean (no errors, mismatches, unexpected closes, connect failures "
          "or lost messages), every target reached the open-loop rate and held all idle connections.")
    p("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
