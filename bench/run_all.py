"""`make bench`: run every benchmark under bench/ and write their results to docs/benchmarks.md.

Each ``bench_*.py`` prints a markdown section. This runner adds the machine, the date and time,
the load averages before and after (the whole run and each benchmark), a summary of every
``Goal``/``- ... met|not met`` line the sections print, keeps the order stable, and records a failed
benchmark as failed (with its last lines) instead of silently dropping it.

``run_all.py NAME...`` runs only those benchmarks and writes only their sections. ``run_all.py --update
NAME...`` runs those and replaces their sections in the existing docs/benchmarks.md, keeping every other
section (and its own date and load, which it carries in its last line) as the last whole run wrote it; the
header then says which sections were re-run, and when.
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
         "bench_operator", "bench_guard", "bench_helm", "bench_restart"]


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


_TOOK = re.compile(r"^_(bench_\w+)\.py took .*_$", re.MULTILINE)


_FAILED = re.compile(r"^### bench_\w+: FAILED \(exit -?\d+\)\n\n```\n.*?\n```$", re.MULTILINE | re.DOTALL)
_GOALS = re.compile(r"^## Goals\n\n(?:- .*\n)*", re.MULTILINE)


def existing_sections(text: str) -> tuple[str, dict[str, str]]:
    """The header (up to the end of its goals) and each section of a docs/benchmarks.md, by script name: what
    lies between the previous section (or the goals) and its own ``_bench_x.py took ..._`` line. A FAILED
    section has no such line and is dropped (a re-run replaces it)."""
    goals_block = _GOALS.search(text)
    begin = goals_block.end() if goals_block else 0
    header, body = text[:begin], _FAILED.sub("", text[begin:])
    found: dict[str, str] = {}
    previous = 0
    for m in _TOOK.finditer(body):
        found[m.group(1)] = body[previous:m.end()].strip()
        previous = m.end()
    return header, found


def main() -> int:
    args = sys.argv[1:]
    update = "--update" in args
    only = {a for a in args if a != "--update"}
    if update and not only:
        print("--update needs the names of the benchmarks to run again (e.g. bench_guard)", file=sys.stderr)
        return 2
    started_at, load_start = dt.datetime.now(dt.UTC), load_avg()
    scripts = [ROOT / "bench" / f"{name}.py" for name in ORDER if (ROOT / "bench" / f"{name}.py").exists()]
    scripts = [s for s in scripts if not only or s.stem in only]
    unknown = only - {s.stem for s in scripts}
    if unknown:
        print(f"no such benchmark: {', '.join(sorted(unknown))} (known: {', '.join(ORDER)})", file=sys.stderr)
        return 2
    sections = []
    by_name: dict[str, str] = {}
    failed = 0
    for script in scripts:
        print(f"running {script.name} ...", file=sys.stderr, flush=True)
        started, load_before = time.monotonic(), load_avg()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT,
                              timeout=3600)
        took = time.monotonic() - started
        if proc.returncode == 0:
            by_name[script.stem] = proc.stdout.strip() + f"\n\n_{script.name} took {took:.0f} s; load average " \
                f"{load_before} before, {load_avg()} after._"
        else:
            failed += 1
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            by_name[script.stem] = f"### {script.stem}: FAILED (exit {proc.returncode})\n\n```\n{tail}\n```"
    doc = ROOT / "docs" / "benchmarks.md"
    previous_header = ""
    if update:
        previous_header, kept = existing_sections(doc.read_text() if doc.exists() else "")
        by_name = {**kept, **by_name}
    sections = [by_name[name] for name in ORDER if name in by_name]
    judged = [g for section in sections for g in goals(section)]
    this_run = (f"{started_at:%Y-%m-%d %H:%M} UTC to {dt.datetime.now(dt.UTC):%H:%M} UTC; load average (1/5/15 min) "
                f"{load_start} when it started, {load_avg()} when it ended")
    if update:
        whole = re.search(r"^Written by `make bench`.*$", previous_header, re.MULTILINE)
        load = re.search(r"^Load average \(1/5/15 min\):.*$", previous_header, re.MULTILINE)
        reruns = re.findall(r"^- Re-run: .*$", previous_header, re.MULTILINE)
        rerun = (f"- Re-run: {', '.join(sorted(only))}, {this_run} (`run_all.py --update`; their sections "
                 "replace the whole run's).")
        top = ((whole.group(0) if whole else "Written by `make bench`.") + "\n\n"
               + (load.group(0) + "\n\n" if load else "") + "\n".join([*reruns, rerun]) + "\n\n")
    else:
        top = (f"Written by `make bench`, {started_at:%Y-%m-%d %H:%M} UTC to {dt.datetime.now(dt.UTC):%H:%M} UTC.\n\n"
               f"Load average (1/5/15 min): {load_start} when the run started, {load_avg()} when it ended. Anything"
               " above 0 means other work shared the cores: the figures are then upper bounds.\n\n")
    header = (
        "# Benchmarks\n\n" + top + f"Machine: {machine()}.\n\n"
        "## Goals\n\n" + ("\n".join(f"- {g}" for g in judged) if judged else "- (no section judged a goal)") + "\n"
    )
    doc.write_text(header + "\n" + "\n\n".join(sections) + "\n")
    print(f"wrote docs/benchmarks.md ({len(sections)} sections, {failed} failed)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
