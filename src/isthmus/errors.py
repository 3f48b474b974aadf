"""The error tree every Isthmus package raises into.

    IsthmusError                    anything Isthmus raises on purpose
    ├── UserError                   the input is wrong; one line, exit code 2, never a traceback
    │   ├── spec.SpecError          a spec file is malformed or inconsistent (file, line, field)
    │   ├── netplan.PlanError       no plan satisfies the spec (says why, in numbers)
    │   └── ...                     each package adds its own below, documented where it lives
    └── (bugs are not IsthmusErrors: they surface as tracebacks)

Errors carry their context and are raised with ``raise ... from exc`` at package borders.
"""

from __future__ import annotations

__all__ = ["IsthmusError", "UserError"]


class IsthmusError(Exception):
    """Base of every error Isthmus raises on purpose."""


class UserError(IsthmusError):
    """Bad input or an impossible request: the message says what, where and how to fix it."""

    exit_code = 2
