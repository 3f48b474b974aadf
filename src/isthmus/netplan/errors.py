"""The planner's errors: both are user errors (one line, exit code 2), never bugs.

UserError
├── PlanError    no plan satisfies the spec and lock; the message says why, in numbers, and how to fix
└── LockError    the lock data is malformed; the message names the key
"""

from __future__ import annotations

from ..errors import UserError

__all__ = ["LockError", "PlanError"]


class PlanError(UserError):
    """No plan satisfies the spec: the message gives the numbers and a fix."""


class LockError(UserError):
    """The lock is malformed: the message names the offending key and what was expected."""
