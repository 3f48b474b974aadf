"""Every package's public surface is what its ``__all__`` says (as httpx checks its own): nothing public by
accident, nothing promised that is not there, and ``__all__`` sorted so a diff shows what changed."""

from __future__ import annotations

import importlib
import types

import pytest

PACKAGES = ["isthmus.spec", "isthmus.netplan", "isthmus.render", "isthmus.kube", "isthmus.rollout",
            "isthmus.operator", "isthmus.cqlguard", "isthmus.lab", "isthmus.pictures"]


@pytest.mark.parametrize("name", PACKAGES)
def test_the_public_names_are_the_exported_ones(name: str) -> None:
    package = importlib.import_module(name)
    exported = getattr(package, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(package, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"
    public = {n for n, v in vars(package).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)
              and n != "annotations"}
    assert public == set(exported), (f"{name}: public but not exported: {sorted(public - set(exported))}; "
                                     f"exported but absent: {sorted(set(exported) - public)}")
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats names"
