"""`isthmus plan` and `isthmus schema`: planning a Fleet before any cluster exists."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

from ..console import dump, err_console, out_console
from ..errors import UserError
from ._app import OutputFormat, OutputOpt, app

if TYPE_CHECKING:
    from .. import netplan

__all__ = ["lock_path_for"]


@app.command()
def schema(
    kind: Annotated[str | None, typer.Option(help="One kind (Fleet, CassandraCluster); default: all")] = None,
) -> None:
    """Print the JSON Schema of the spec, for editors and CI validation."""
    from ..spec import json_schema
    from ..spec.schema import kind_models

    if kind is not None and kind not in kind_models():
        raise UserError(f"unknown kind {kind!r}; known kinds: {', '.join(kind_models())}")
    dump(json_schema(kind), "json")


def lock_path_for(spec: Path) -> Path:
    """``fleet.yaml`` locks into ``fleet.lock.yaml`` beside it, like a package lock."""
    return spec.with_name(spec.stem + ".lock.yaml")


@app.command()
def plan(
    spec_file: Annotated[Path, typer.Option("--file", "-f", metavar="FILE", help="Fleet spec (YAML)")],
    output: OutputOpt = OutputFormat.TABLE,
    check: Annotated[bool, typer.Option("--check", help="Validate already-assigned CIDRs and IDs")] = False,
    report: Annotated[Path | None, typer.Option(help="Also write a markdown report here")] = None,
    map_: Annotated[Path | None, typer.Option("--map", help="Also draw the address map (PNG) here")] = None,
    lock: Annotated[Path | None, typer.Option(help="Lock file; default: FILE's stem + .lock.yaml")] = None,
    locked: Annotated[bool, typer.Option("--locked", help="Fail if the lock would change (for CI)")] = False,
    write_lock: Annotated[bool, typer.Option(help="Record the allocations in the lock file")] = True,
) -> None:
    """Plan pod/service CIDRs, cluster IDs, MTU and capacity for a Fleet, before any cluster exists."""
    from .. import netplan
    from ..pictures import planview
    from ..spec import load_file, require_fleet

    fleet = require_fleet(load_file(spec_file))
    if check:
        found = netplan.check(fleet)
        if output is OutputFormat.TABLE:
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
        raise UserError(f"{lock_file}: the plan changes the lock; run `isthmus plan -f {spec_file}` and commit it")
    if write_lock and not locked and (previous is None or previous.to_dict() != new_lock):
        _write(lock_file, _LOCK_HEADER + yaml.safe_dump(new_lock, sort_keys=False))
    if output is OutputFormat.TABLE:
        planview.print_plan(result, out_console)
    else:
        dump(result.to_dict(), output.value)
    if report is not None:
        _write(report, planview.markdown(result))
        err_console.print(f"report written to {report}")
    if map_ is not None:
        from ..pictures import planmap

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
    from .. import netplan

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


