"""``isthmus lab`` commands that need no running lab: errors are one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from isthmus.lab.cli import lab_app

runner = CliRunner()


def test_status_of_a_missing_lab_is_a_user_error(tmp_path: Path) -> None:
    result = runner.invoke(lab_app, ["status", "--state-dir", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no lab 'default'" in result.output
    assert "isthmus lab up" in result.output


def test_fault_on_a_missing_lab_is_a_user_error(tmp_path: Path) -> None:
    result = runner.invoke(lab_app, ["fault", "freeze", "c1", "--state-dir", str(tmp_path / "nope")])
    assert result.exit_code == 2


def test_down_of_a_missing_lab_is_fine(tmp_path: Path) -> None:
    result = runner.invoke(lab_app, ["down", "--state-dir", str(tmp_path / "nope")])
    assert result.exit_code == 0, result.output


def test_help_lists_the_commands() -> None:
    result = runner.invoke(lab_app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("up", "down", "status", "env", "logs", "fault"):
        assert cmd in result.output
    result = runner.invoke(lab_app, ["fault", "--help"])
    for cmd in ("freeze", "thaw", "stop", "start", "node-not-ready", "node-recover"):
        assert cmd in result.output
