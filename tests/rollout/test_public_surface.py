"""The rollout package's public surface: what ``__all__`` says, and one apply path (issue 12, item 4)."""

from __future__ import annotations

import types

import isthmus.rollout
import isthmus.rollout.deploying


def test_public_surface_is_what_all_says() -> None:
    public = {n for n in vars(isthmus.rollout) if not n.startswith("_") and n.isidentifier()
              and not isinstance(getattr(isthmus.rollout, n), types.ModuleType)}
    assert public == set(isthmus.rollout.__all__)


def test_apply_rollout_is_the_only_way_to_apply() -> None:
    assert "apply_rollout" in isthmus.rollout.__all__
    for module in (isthmus.rollout, isthmus.rollout.deploying):
        assert not hasattr(module, "apply_app") and "DeployOptions" not in vars(module)
