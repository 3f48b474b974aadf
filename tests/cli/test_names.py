"""One meaning per name: no two public classes in ``isthmus`` share a name.

Two ``Plan`` classes (the network's and the rollout's) or three ``Phase`` enums make a reader ask which one a
line means, and let an import of the wrong one type-check whenever the fields happen to agree. Every module
under ``src/isthmus`` is read with :mod:`ast` (not imported: the lab and the operator need not load), and each
public top-level class is counted once per module that defines it.
"""

from __future__ import annotations

import ast
import pkgutil
from collections import defaultdict
from pathlib import Path

import isthmus

#: A name two modules may both define, with the reason. Keep it empty unless a clash is the point.
ALLOWED: dict[str, str] = {}


def public_classes() -> dict[str, list[str]]:
    """Public top-level class name -> the modules that define it."""
    root = Path(isthmus.__file__).parent
    found: dict[str, list[str]] = defaultdict(list)
    for info in pkgutil.walk_packages([str(root)], prefix="isthmus."):
        rel = Path(*info.name.split(".")[1:])
        path = root / rel / "__init__.py" if info.ispkg else (root / rel).with_suffix(".py")
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                found[node.name].append(info.name)
    return found


def test_the_walk_sees_the_whole_package() -> None:
    classes = public_classes()
    assert "isthmus.netplan.planning" in classes["NetworkPlan"]
    assert "isthmus.rollout.steps" in classes["RolloutPlan"]
    assert "isthmus.cqlguard.protocol.connection" in classes["ConnectionPhase"]  # a subpackage's module too
    assert sum(len(m) for m in classes.values()) > 200


def test_no_two_public_classes_share_a_name() -> None:
    clashes = {name: modules for name, modules in public_classes().items() if len(modules) > 1 and name not in ALLOWED}
    assert not clashes, ("public classes that share a name (rename one so each name has one meaning, or add it to "
                         f"ALLOWED with the reason): {clashes}")


def test_the_allowlist_names_only_real_clashes() -> None:
    classes = public_classes()
    stale = [name for name in ALLOWED if len(classes.get(name, [])) < 2]
    assert not stale, f"ALLOWED lists names that no longer clash: {stale}"
