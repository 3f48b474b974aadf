"""Every ``isthmus`` command line the README shows is a valid command line, and the offline ones run.

Each line of the README's ``sh`` blocks that starts with ``isthmus`` is parsed by the real CLI (options,
arguments, choices and required values checked exactly as when a user types it). Placeholders become
values (``CLUSTER`` -> ``c1``), ``[optional parts]`` are kept, ``a|b`` alternatives take the first. The
commands that need no cluster (planning, rendering, explaining, the schema) then run, through the
console script, on the examples.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from isthmus.cli import app

ROOT = Path(__file__).resolve().parents[2]
ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
PLACEHOLDERS = {"CLUSTER": "c1", "NODE": "c1-region-1a-1", "COMPONENT": "etcd", "REVISION": "1", "NAME": "c1",
                "S": "30", "FILE": "fleet.yaml", "DIR": "out", "PATH": "out"}
OFFLINE = ("plan", "render", "explain", "schema")


def _examples() -> list[str]:
    out: list[str] = []
    fence: str | None = None  # the open block's language
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.lstrip().startswith("```"):
            fence = line.strip().removeprefix("```") if fence is None else None
            continue
        text = line.strip().removeprefix("$ ")
        if fence in ("", "sh", "bash", "console", "shell") and text.startswith("isthmus "):
            out.append(text)
    return out


def _argv(example: str) -> list[str]:
    text = re.sub(r"\s+#.*$", "", example)  # a trailing comment
    text = re.sub(r"\s+[>|]\s.*$", "", text)  # a redirect or a pipe
    text = re.sub(r"\[([^\]]*)\]", r"\1", text)  # [optional parts] are kept
    words = []
    for word in shlex.split(text)[1:]:
        if "|" in word and not word.startswith("-"):
            word = word.split("|")[0]
        words.append(PLACEHOLDERS.get(word, word))
    return words


EXAMPLES = _examples()


def test_the_readme_documents_many_commands() -> None:
    assert len(EXAMPLES) >= 35
    assert {e.split()[1] for e in EXAMPLES} >= {"plan", "render", "apply", "status", "rollout", "lab"}


def _parse(argv: list[str]) -> Any:
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("isthmus", list(argv))
    while hasattr(command, "resolve_command"):
        rest = [*(getattr(ctx, "protected_args", None) or getattr(ctx, "_protected_args", [])), *ctx.args]
        if not rest:
            break
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


@pytest.fixture
def examples_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    for name in ("fleet.yaml", "cassandra.yaml", "fleet-assigned.yaml"):
        shutil.copy(ROOT / "examples" / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_is_a_valid_command_line(example: str, examples_dir: Path) -> None:
    ctx = _parse(_argv(example))
    assert ctx.command is not None


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.split()[1] in OFFLINE])
def test_the_offline_examples_run(example: str, examples_dir: Path) -> None:
    proc = subprocess.run([ISTHMUS, *_argv(example)], capture_output=True, text=True, timeout=120,
                          cwd=examples_dir)
    if "--check" in example:  # the README's fleet-assigned.yaml is an audit that finds blockers: exit 2
        assert proc.returncode == 2 and "error(s)" in proc.stdout, f"{example}\n{proc.stdout}\n{proc.stderr}"
    else:
        assert proc.returncode == 0, f"{example}\n{proc.stdout}\n{proc.stderr}"
