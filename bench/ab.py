#!/usr/bin/env python3
"""Two ringway binaries side by side in one run: messages per proxy CPU-second through each, alternating.

Usage: bench/ab.py OLD_BINARY NEW_BINARY [--size 64] [--conns 100] [--duration 5] [--repeats 5] [--config EXTRA_YAML]
                  [--old-config EXTRA_YAML] [--new-config EXTRA_YAML] [--tls [--cert PEM --key PEM]]

--tls relays wss instead of ws (the listener serves --cert/--key, by default the development certificate that
`ringway cert self-signed --out config/examples/certs --name localhost` writes).

Measures what a change costs on the relay's hot path (metrics, limits): each binary relays ringway-load's closed
loop (one worker pinned to CPU 1; load generator and echo upstream on CPU 0), the runs alternate so drift on a shared
machine hits both, and the medians and their ratio are printed. Quote the ratio, not the absolute figures.

To measure what a setting costs, pass the same binary twice and the setting to one side only, e.g. the message
rate limits (rates far above the load, so they never trigger):
  bench/ab.py target/release/ringway target/release/ringway \
      --new-config $'limits:\n  messages:\n    from_client: {messages_per_second: 1000000000, bytes_per_second: 1000GiB}\n'
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile, time

def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def wait_addr(path, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        m = re.search(r"127\.0\.0\.1:(\d+)", open(path).read())
        if m:
            return int(m.group(1))
        time.sleep(0.05)
    sys.exit(f"no address in {path}")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old"); ap.add_argument("new")
    ap.add_argument("--load", default="target/release/ringway-load")
    ap.add_argument("--size", default="64"); ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--duration", type=float, default=5.0); ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--config", default="", help="extra YAML appended to the route file (both binaries)")
    ap.add_argument("--old-config", default="", help="extra YAML appended for OLD only (after --config)")
    ap.add_argument("--new-config", default="", help="extra YAML appended for NEW only (after --config)")
    ap.add_argument("--tls", action="store_true", help="wss: the listener terminates TLS")
    ap.add_argument("--cert", default="config/examples/certs/cert.pem")
    ap.add_argument("--key", default="config/examples/certs/key.pem")
    a = ap.parse_args()
    tls_block = (f"    tls:\n      certificates:\n        - cert: {os.path.abspath(a.cert)}\n"
                 f"          key: {os.path.abspath(a.key)}\n") if a.tls else ""
    url_of = (lambda port: f"wss://localhost:{port}/") if a.tls else (lambda port: f"ws://127.0.0.1:{port}/")
    tls_args = ["--ca", os.path.abspath(a.cert)] if a.tls else []
    work = tempfile.mkdtemp()
    procs = []
    def stop_all():
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
    try:
        echo_out = os.path.join(work, "echo.out")
        procs.append(subprocess.Popen(["taskset", "-c", "0", a.load, "echo", "--listen", "127.0.0.1:0", "--threads", "1"],
                                      stdout=open(echo_out, "w"), stderr=subprocess.DEVNULL))
        echo = wait_addr(echo_out)
        cfgs = {}
        for name in ("old", "new"):
            cfgs[name] = os.path.join(work, f"ringway-{name}.yaml")
            with open(cfgs[name], "w") as f:
                f.write(f"listeners:\n  - name: main\n    bind: 127.0.0.1:0\n{tls_block}upstreams:\n  up:\n    servers: [127.0.0.1:{echo}]\n"
                        f"routes:\n  - path: /\n    upstream: up\n{a.config}{getattr(a, name + '_config')}")
        results = {"old": [], "new": []}
        for rep in range(a.repeats):
            for name in ("old", "new"):
                out = os.path.join(work, f"gw-{name}.out")
                gw = subprocess.Popen(["taskset", "-c", "1", getattr(a, name), "--config", cfgs[name], "--workers", "1"],
                                      stdout=open(out, "w"), stderr=subprocess.DEVNULL)
                procs.append(gw)
                port = wait_addr(out)
                c0 = cpu_seconds(gw.pid)
                load = subprocess.run(["taskset", "-c", "0", a.load, "--json", "--threads", "1", "--conns", str(a.conns),
                                       "--size", a.size, "--warmup", "1s", "--duration", f"{a.duration}s",
                                       *tls_args, url_of(port)], capture_output=True, text=True)
                c1 = cpu_seconds(gw.pid)
                gw.send_signal(signal.SIGKILL); gw.wait()
                r = json.loads(load.stdout.strip().splitlines()[-1])
                bad = r["errors"] + r["mismatches"] + r["unexpected_closes"] + r["connect_failures"]
                # CPU over warm-up + measurement; messages over the measurement: scale messages to the same span.
                per_cpu = r["msgs_per_sec"] * (a.duration + 1.0) / (c1 - c0) if c1 > c0 else 0.0
                results[name].append(per_cpu)
                print(f"rep {rep} {name}: {r['msgs_per_sec']:,.0f} msg/s, proxy cpu {c1 - c0:.2f}s, "
                      f"{per_cpu:,.0f} msgs per proxy CPU-s, bad {bad}", flush=True)
                if bad:
                    sys.exit("errors in a run")
        old, new = statistics.median(results["old"]), statistics.median(results["new"])
        print(f"\nmedian msgs per proxy CPU-s: old {old:,.0f}, new {new:,.0f}; new/old = {new / old:.3f} "
              f"({(new / old - 1) * 100:+.1f}%)")
    finally:
        stop_all()

if __name__ == "__main__":
    main()
