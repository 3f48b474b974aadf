"""The ``isthmus`` command: thin wiring from arguments to the library and back to the console.

Every decision lives in the library; these modules gather inputs, call the core, and render
the result as a table (people) or ``-o json|yaml`` (scripts). A ``UserError`` becomes one red
line and exit code 2; anything else is a bug and keeps its traceback.

One module per command group: ``_plan`` (plan, schema), ``_deploy`` (render, diff, apply,
status, delete); the lab's commands live with the lab.
"""

from __future__ import annotations

import sys

from rich.text import Text

from ..console import err_console
from ..errors import UserError
from . import _deploy, _plan  # noqa: F401  (each registers its commands on `app`)
from ._app import app

__all__ = ["app", "main"]


def _add_lab() -> None:
    from ..lab.cli import lab_app

    app.add_typer(lab_app, name="lab", help="A local lab of real Kubernetes clusters, Cassandra and Prometheus.")


_add_lab()


def main() -> None:
    try:
        app()
    except UserError as exc:
        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
