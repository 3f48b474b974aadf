"""The ``isthmus`` command: thin wiring from arguments to the library and back to the console.

Every decision lives in the library; these modules gather inputs, call the core, and render
the result as a table (people) or ``-o json|yaml`` (scripts). A ``UserError`` becomes one red
line and exit code 2; anything else is a bug and keeps its traceback.

One module per command group: ``_plan`` (plan, schema), ``_deploy`` (render, diff, apply,
status, delete), ``_rollout`` (rollout, history, rollback, lock), ``_repair`` (repair), ``_restart``
(restart), ``_network`` (explain, mesh render, preflight); the lab's commands live with the lab.
"""

from __future__ import annotations

import sys

from rich.text import Text

from ..console import err_console
from ..errors import UserError
from . import _deploy, _network, _plan, _repair, _restart, _rollout  # noqa: F401  (each registers its commands on `app`)
from ._app import app

__all__ = ["app", "main"]


def _add_lab() -> None:
    from ..lab.cli import lab_app

    app.add_typer(lab_app, name="lab", help="A local lab of real Kubernetes clusters, Cassandra and Prometheus.")


def _add_guard() -> None:
    from ..cqlguard.cli import guard_app

    app.add_typer(guard_app, name="guard", help="cqlguard: the CQL-aware policy proxy (run it, read its flows).")


_add_lab()
_add_guard()


def _add_operator() -> None:
    from ..operator.cli import operator_app

    app.add_typer(operator_app, name="operator", help="The Kubernetes operator: reconcile CassandraCluster objects.")


_add_operator()


def main() -> None:
    try:
        app()
    except UserError as exc:
        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
