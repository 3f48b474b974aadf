"""Every help screen, from the root to the deepest command, shows names and choices, never Python types."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from isthmus.cli import app

TYPE_NOISE = re.compile(r"<(bool|str|int|float|path|list\[[^\]]*\]|[A-Za-z_]+ range)>", re.IGNORECASE)


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    if hasattr(group, "list_commands"):  # a group (typer may vendor its own click)
        ctx = type(group).context_class(group)
        for name in group.list_commands(ctx):
            sub = group.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                out.extend(_commands(sub, (*path, name)))
    return out


COMMANDS = _commands(typer.main.get_command(app))


def test_the_walk_finds_the_commands() -> None:
    assert {("apply",), ("guard", "run"), ("lab", "down"), ("rollout", "plan")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "isthmus")
def test_no_help_screen_shows_type_noise(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    assert not TYPE_NOISE.search(result.output), result.output
