"""tests/operator/opharness.py (the operator as a real process on the lab), for the chart's lab test.

tests/operator is not a package (its name would shadow the standard library's ``operator``), so
its folder goes on ``sys.path`` here, as pytest puts it there for the tests inside it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from opharness import (
    ISTHMUS,
    OperatorProcess,
    apply_doc,
    converged,
    member_kubeconfig,
    statefulsets,
    wait_for,
)

__all__ = ["ISTHMUS", "OperatorProcess", "apply_doc", "converged", "member_kubeconfig", "statefulsets", "wait_for"]
