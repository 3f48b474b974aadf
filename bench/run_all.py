"""`make bench`: run every benchmark under bench/ and write their results to docs/benchmarks.md.

Each ``bench_*.py`` prints a markdown section. This runner adds the machine, the date and time,
the load averages before and after (the whole run and each benchmark), a summary of every
``Goal``/``- ... met|not met`` line the sections print, keeps the order stable, and records a failed
benchmark as failed (with its last lines) instead of silently dropping it.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["bench_plan", "bench_lab", "bench_cassandra", "bench_ring", "bench_add_dc", "bench_apply", "bench_rollout",
         "bench_operator", "bench_guard", "bench_helm"]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return (f"{os.cpu_count()} CPUs ({model}), {mem_kib / 1024 / 1024:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


_GOAL = re.compile(r"\*\*(met|not met)\*\*")


def goals(section: str) -> list[str]:
    """The lines of a section that judge a goal (they carry **met** or **not met**)."""
    return [line.strip().lstrip("- ") for line in section.splitlines() if _GOAL.search(line)]


def main() -> int:
    only = set(sys.argv[1:])
    started_at, load_start = dt.datetime.now(dt.UTC), load_avg()
    scripts = [ROOT / "bench" / f"{name}.py" for name in ORDER if (ROOT / "bench" / f"{name}.py").exists()]
    scripts = [s for s in scripts if not only or s.stem in only]
    sections = []
    failed = 0
    for script in scripts:
        print(f"running {script.name} ...", file=sys.stderr, flush=True)
        started, load_before = time.monotonic(), load_avg()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT,
                              timeout=3600)
        took = time.monotonic() - started
        if proc.returncode == 0:
            sections.append(proc.stdout.strip() + f"\n\n_{script.name} took {took:.0f} s; load average "
                            f"{load_before} before, {load_avg()} after._")
        else:
            failed += 1
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            sections.append(f"### {script.stem}: FAILED (exit {proc.returncode})\n\n```\n{tail}\n```")
    judged = [g for section in sections for g in goals(section)]
    header = (
        "# Benchmarks\n\n"
        f"Written by `make bench`, {started_at:%Y-%m-%d %H:%M} UTC to {dt.datetime.now(dt.UTC):%H:%M} UTC.\n\n"
        f"Machine: {machine()}.\n\n"
        f"Load average (1/5/15 min): {load_start} when the run started, {load_avg()} when it ended. Anything"
        " above 0 means other work shared the cores: the figures are then upper bounds.\n\n"
        "## Goals\n\n" + ("\n".join(f"- {g}" for g in judged) if judged else "- (no section judged a goal)") + "\n"
    )
    (ROOT / "docs" / "benchmarks.md").write_text(header + "\n" + "\n\n".join(sections) + "\n")
    print(f"wrote docs/benchmarks.md ({len(sections)} sections, {failed} failed)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
