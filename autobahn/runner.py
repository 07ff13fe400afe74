"""Runs Autobahn TestSuite cases with kosoku against the gateway and directly against its upstream.

Owned by autobahn/run.sh, which starts the servers and passes their URLs here. For every pair
(`--pair NAME GATEWAY_URL DIRECT_URL CASES`) the same cases run once through the gateway and once
straight at the upstream behind it. Reports (Autobahn JSON + HTML) go to OUT/NAME-gateway and
OUT/NAME-direct; a summary goes to stdout, OUT/summary.json and the --markdown file.

Exit status: 0 when every case passes through the gateway and none is worse through the gateway
than directly; 1 otherwise (the offending cases are listed); 2 when a run could not finish.
Ranking: OK > NON-STRICT > INFORMATIONAL > UNIMPLEMENTED > FAILED, for both "behavior" and
"behaviorClose" (close verdicts other than OK / INFORMATIONAL rank as FAILED).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from kosoku import FailureError, run_fuzzingclient
from kosoku._report import write_reports

BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
RANK = {name: len(BEHAVIORS) - i for i, name in enumerate(BEHAVIORS)}  # OK=5 ... FAILED=1
# Verdicts a case may have through the gateway without failing the run.
PASSING_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
PASSING_CLOSE = {"OK", "INFORMATIONAL", "NON-STRICT"}


def rank(verdict: str) -> int:
    """Ranks a behavior or behaviorClose verdict; unknown ones (ERROR, WRONG CODE, ...) are FAILED."""
    return RANK.get(verdict, RANK["FAILED"])


def bucket(verdict: str) -> str:
    """The summary column a verdict is counted in."""
    return verdict if verdict in RANK else "FAILED"


@dataclass
class Case:
    """One case's outcome, as kept for the summary."""

    case_id: str
    behavior: str
    behavior_close: str
    result: str
    result_close: str
    description: str
    duration_ms: int


@dataclass
class Run:
    """The outcome of one kosoku run against one URL."""

    name: str
    url: str
    cases: dict[str, Case] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


def sort_key(case_id: str) -> list[int]:
    return [int(p) for p in case_id.split(".")]


async def run_target(
    name: str, url: str, patterns: list[str], parallelism: int, timeout: float, out: str
) -> Run:
    """Runs the cases against one URL and writes its reports to OUT/NAME.

    Runs go batch by batch (see `batches`), so a run that hits the time budget keeps what
    finished.
    """
    run = Run(name=name, url=url)
    started = time.monotonic()
    results: list[Any] = []
    for batch in batches(patterns):
        pattern = " ".join(batch) if len(batch) < 4 else f"{batch[0]} .. {batch[-1]}"
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            run.error = f"time budget of {timeout:.0f}s used up before {pattern}"
            break
        try:
            results += await asyncio.wait_for(
                run_fuzzingclient(url, batch, None, concurrency=parallelism), left
            )
        except FailureError as failure:  # some case did not pass; results are still complete
            results += list(failure.results)
        except asyncio.TimeoutError:
            run.error = f"{pattern} did not finish within the {timeout:.0f}s budget"
            break
        except Exception as e:  # noqa: BLE001 - a crashed run is reported, not hidden
            run.error = f"{pattern}: {type(e).__name__}: {e}"
            break
    run.seconds = time.monotonic() - started
    for r in results:
        run.cases[r.case_id] = Case(
            case_id=r.case_id,
            behavior=r.behavior.value,
            behavior_close=r.behavior_close.value,
            result=r.result or "",
            result_close=r.result_close or "",
            description=r.description or "",
            duration_ms=int(r.duration or 0),
        )
    if results:
        write_reports(results, os.path.join(out, name))
    return run


def batches(patterns: list[str], size: int = 16) -> list[list[str]]:
    """Splits the selection into kosoku runs: each glob alone, exact ids `size` at a time.

    kosoku's `*` is best used as a trailing `X.*`; exact ids in one run keep its parallelism.
    """
    out: list[list[str]] = []
    ids: list[str] = []
    for p in patterns:
        if "*" in p:
            if ids:
                out.append(ids)
                ids = []
            out.append([p])
        else:
            ids.append(p)
            if len(ids) == size:
                out.append(ids)
                ids = []
    if ids:
        out.append(ids)
    return out


def counts(run: Run) -> dict[str, dict[str, int]]:
    """Counts per behavior and per behaviorClose verdict."""
    behavior = {b: 0 for b in BEHAVIORS}
    close: dict[str, int] = {}
    for c in run.cases.values():
        behavior[bucket(c.behavior)] += 1
        close[c.behavior_close] = close.get(c.behavior_close, 0) + 1
    return {"behavior": behavior, "behaviorClose": close}


def gateway_failures(gw: Run) -> list[Case]:
    """Cases that fail through the gateway in their own right."""
    return [
        c
        for c in gw.cases.values()
        if c.behavior not in PASSING_BEHAVIOR or c.behavior_close not in PASSING_CLOSE
    ]


def regressions(gw: Run, direct: Run) -> list[tuple[str, Case | None, Case]]:
    """Cases that are worse through the gateway than directly (or missing through it)."""
    worse: list[tuple[str, Case | None, Case]] = []
    for case_id, d in direct.cases.items():
        g = gw.cases.get(case_id)
        if g is None:
            worse.append((case_id, None, d))
        elif rank(g.behavior) < rank(d.behavior) or rank(g.behavior_close) < rank(
            d.behavior_close
        ):
            worse.append((case_id, g, d))
    return sorted(worse, key=lambda w: sort_key(w[0]))


def one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render(runs: list[Run], pairs: list[tuple[str, Run, Run]], meta: dict[str, str]) -> str:
    """The Markdown summary (also printed on stdout)."""
    lines = [
        "# Autobahn TestSuite results",
        "",
        f"Generated by `autobahn/run.sh` on {meta['date']} at commit `{meta['commit']}` "
        f"with kosoku {meta['kosoku']} (parallelism {meta['parallelism']}).",
        "",
        "## behavior per target",
        "",
        "| target | url | cases | " + " | ".join(BEHAVIORS) + " | seconds |",
        "|---|---|---:|" + "---:|" * len(BEHAVIORS) + "---:|",
    ]
    for run in runs:
        b = counts(run)["behavior"]
        cells = " | ".join(str(b[k]) for k in BEHAVIORS)
        lines.append(
            f"| {run.name} | `{run.url}` | {len(run.cases)} | {cells} | {run.seconds:.0f} |"
        )
    lines += ["", "## behaviorClose per target", ""]
    for run in runs:
        close = counts(run)["behaviorClose"]
        text = ", ".join(f"{k} {v}" for k, v in sorted(close.items())) or "none"
        lines.append(f"- {run.name}: {text}")
    errors = [r for r in runs if r.error]
    if errors:
        lines += ["", "## runs that did not finish", ""]
        lines += [f"- {r.name}: {r.error}" for r in errors]
    verdict_ok = not errors
    for pair, gw, direct in pairs:
        failed = gateway_failures(gw)
        worse = regressions(gw, direct)
        verdict_ok = verdict_ok and not failed and not worse
        lines += ["", f"## {pair}: gateway vs direct", ""]
        if not failed and not worse:
            lines.append(
                "No case fails through the gateway, and none is worse than directly."
            )
        if failed:
            lines += [f"Failed through the gateway ({len(failed)}):", ""]
            for c in sorted(failed, key=lambda c: sort_key(c.case_id)):
                lines.append(
                    f"- {c.case_id} [{c.behavior} / {c.behavior_close}]: "
                    f"{one_line(c.result)} / {one_line(c.result_close)}"
                )
            lines.append("")
        if worse:
            lines += [f"Worse through the gateway than directly ({len(worse)}):", ""]
            for case_id, g, d in worse:
                got = f"{g.behavior} / {g.behavior_close}" if g else "missing"
                lines.append(
                    f"- {case_id}: gateway {got}, direct {d.behavior} / {d.behavior_close}"
                    + (f": {one_line(g.result)} / {one_line(g.result_close)}" if g else "")
                )
            lines.append("")
        direct_bad = gateway_failures(direct)
        if direct_bad:
            lines += [f"Not passing directly against the upstream ({len(direct_bad)}):", ""]
            for c in sorted(direct_bad, key=lambda c: sort_key(c.case_id)):
                lines.append(
                    f"- {c.case_id} [{c.behavior} / {c.behavior_close}]: "
                    f"{one_line(c.result)} / {one_line(c.result_close)}"
                )
            lines.append("")
    lines += ["", f"Verdict: {'PASS' if verdict_ok else 'FAIL'}", ""]
    return "\n".join(lines).replace("\n\n\n", "\n\n")


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def amain() -> int:
    parser = argparse.ArgumentParser(description="Autobahn cases: gateway vs direct upstream")
    parser.add_argument(
        "--pair",
        nargs=4,
        action="append",
        required=True,
        metavar=("NAME", "GATEWAY_URL", "DIRECT_URL", "CASES"),
        help="cases (comma-separated ids or globs) to run through the gateway and directly",
    )
    parser.add_argument("--out", required=True, help="report directory")
    parser.add_argument("--markdown", help="also write the summary to this file")
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument(
        "--timeout", type=float, default=300, help="time budget in seconds per target"
    )
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    runs: list[Run] = []
    pairs: list[tuple[str, Run, Run]] = []
    for name, gw_url, direct_url, cases in args.pair:
        patterns = [p.strip() for p in cases.split(",") if p.strip()]
        # The gateway run and the direct run go side by side: they share nothing but the CPU,
        # and the verdicts do not depend on timing.
        gw, direct = await asyncio.gather(
            run_target(f"{name}-gateway", gw_url, patterns, args.parallelism, args.timeout, args.out),
            run_target(f"{name}-direct", direct_url, patterns, args.parallelism, args.timeout, args.out),
        )
        runs += [gw, direct]
        pairs.append((name, gw, direct))

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "kosoku": importlib.metadata.version("kosoku"),
        "parallelism": str(args.parallelism),
    }
    text = render(runs, pairs, meta)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    summary = {
        "meta": meta,
        "runs": [
            {
                "name": r.name,
                "url": r.url,
                "seconds": round(r.seconds, 1),
                "error": r.error,
                "counts": counts(r),
                "cases": {k: vars(v) for k, v in sorted(r.cases.items(), key=lambda kv: sort_key(kv[0]))},
            }
            for r in runs
        ],
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)

    if any(r.error for r in runs):
        return 2
    bad = any(gateway_failures(gw) or regressions(gw, direct) for _, gw, direct in pairs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(amain()))
