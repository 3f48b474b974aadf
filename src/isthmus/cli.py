"""The ``isthmus`` command: thin wiring from arguments to the library and back to the console.

Every decision lives in the library; this module gathers inputs, calls the core, and renders
the result as a table (people) or ``-o json|yaml`` (scripts). A ``UserError`` becomes one red
line and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

from . import __version__
from .console import dump, err_console, out_console
from .errors import UserError

if TYPE_CHECKING:
    from . import netplan

__all__ = ["app", "main"]

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


@app.command()
def schema(
    kind: Annotated[str | None, typer.Option(help="One kind (Fleet, CassandraCluster); default: all")] = None,
) -> None:
    """Print the JSON Schema of the spec, for editors and CI validation."""
    from .spec import json_schema
    from .spec.schema import kind_models

    if kind is not None and kind not in kind_models():
        raise UserError(f"unknown kind {kind!r}; known kinds: {', '.join(kind_models())}")
    dump(json_schema(kind), "json")


def lock_path_for(spec: Path) -> Path:
    """``fleet.yaml`` locks into ``fleet.lock.yaml`` beside it, like a package lock."""
    return spec.with_name(spec.stem + ".lock.yaml")


@app.command()
def plan(
    spec_file: Annotated[Path, typer.Argument(metavar="FILE", help="Fleet spec (YAML)")],
    output: OutputOpt = Output.TABLE,
    check: Annotated[bool, typer.Option("--check", help="Validate already-assigned CIDRs and IDs")] = False,
    report: Annotated[Path | None, typer.Option(help="Also write a markdown report here")] = None,
    map_: Annotated[Path | None, typer.Option("--map", help="Also draw the address map (PNG) here")] = None,
    lock: Annotated[Path | None, typer.Option(help="Lock file; default: FILE's stem + .lock.yaml")] = None,
    locked: Annotated[bool, typer.Option("--locked", help="Fail if the lock would change (for CI)")] = False,
    write_lock: Annotated[bool, typer.Option(help="Record the allocations in the lock file")] = True,
) -> None:
    """Plan pod/service CIDRs, cluster IDs, MTU and capacity for a Fleet, before any cluster exists."""
    from . import netplan
    from .observe import planview
    from .spec import load_file, require_fleet

    fleet = require_fleet(load_file(spec_file))
    if check:
        found = netplan.check(fleet)
        if output is Output.TABLE:
            planview.print_check(found, out_console)
        else:
            dump(found.to_dict(), output.value)
        if not found.ok:
            raise typer.Exit(2)
        return

    lock_file = lock or lock_path_for(spec_file)
    previous = _read_lock(lock_file)
    result = netplan.plan(fleet, previous)
    new_lock = result.lock.to_dict()
    if locked and (previous is None or previous.to_dict() != new_lock):
        raise UserError(f"{lock_file}: the plan changes the lock; run `isthmus plan {spec_file}` and commit it")
    if write_lock and not locked and (previous is None or previous.to_dict() != new_lock):
        _write(lock_file, _LOCK_HEADER + yaml.safe_dump(new_lock, sort_keys=False))
    if output is Output.TABLE:
        planview.print_plan(result, out_console)
    else:
        dump(result.to_dict(), output.value)
    if report is not None:
        _write(report, planview.markdown(result))
        err_console.print(f"report written to {report}")
    if map_ is not None:
        from .observe import planmap

        _write(map_, "")
        planmap.draw(result, map_)
        err_console.print(f"map written to {map_}")


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}; choose a writable path") from exc


_LOCK_HEADER = "# Written by `isthmus plan`. Commit it: allocations recorded here never move.\n"


def _read_lock(path: Path) -> netplan.Lock | None:
    from . import netplan

    if not path.exists():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: the lock file is not valid YAML ({exc}); fix it or delete it to re-plan") from exc
    try:
        return netplan.Lock.from_dict(data)
    except netplan.LockError as exc:
        raise UserError(f"{path}: {exc}") from exc


def _add_subcommands() -> None:
    from .lab.cli import lab_app

    app.add_typer(lab_app, name="lab", help="A local lab of real Kubernetes clusters, Cassandra and Prometheus.")


def main() -> None:
    _add_subcommands()
    try:
        app()
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
