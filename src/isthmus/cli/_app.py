"""The root ``isthmus`` Typer app and the options every command shares."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
import typer.core

from .. import __version__
from ..console import out_console

__all__ = ["OutputFormat", "OutputOpt", "app"]

def _value_name(param: Any, ctx: Any) -> str | None:
    """What a help screen shows after an option or argument: its metavar, its choices, or its name.

    Typer's own display is the annotation (``<bool>``, ``<list[Path]>``, ``<float>``): noise a reader of
    ``--help`` does not need. Flags show nothing; an option that takes a value shows a name for it
    (``--timeout TIMEOUT``, ``--file FILE...``); choices stay, since they are what one may type.
    """
    if param.metavar is not None:
        return str(param.metavar)
    if getattr(param, "is_flag", False):
        return None
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None and getattr(descriptor, "is_choice", False):
        return str(typer.core._TyperParameter.display_type(param, ctx)).strip("<>")
    name = str(param.name or "value").upper()
    return name + ("..." if param.nargs != 1 or getattr(param, "multiple", False) else "")


for _kind in (getattr(typer.core, "_TyperParameter", None), typer.core.TyperArgument, typer.core.TyperOption):
    if _kind is not None and hasattr(_kind, "display_type_rich"):  # typer 0.20 and later
        setattr(_kind, "display_type_rich", _value_name)  # noqa: B010 - replacing a method of typer's classes

app = typer.Typer(
    name="isthmus",
    help="Run one distributed database across many Kubernetes clusters as one system.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


OutputOpt = Annotated[OutputFormat, typer.Option("--output", "-o", help="table for people, json|yaml for scripts")]


def _version(value: bool) -> None:
    if value:
        out_console.print(f"isthmus {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    """Plan, connect, deploy, secure and observe one database across clusters."""


