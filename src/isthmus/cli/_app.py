"""The root ``isthmus`` Typer app and the options every command shares."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from .. import __version__
from ..console import out_console

__all__ = ["Output", "OutputOpt", "app"]

app = typer.Typer(
    name="isthmus",
    help="Run one distributed database across many Kubernetes clusters as one system.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="table for people, json|yaml for scripts")]


def _version(value: bool) -> None:
    if value:
        out_console.print(f"isthmus {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    """Plan, connect, deploy, secure and observe one database across clusters."""


