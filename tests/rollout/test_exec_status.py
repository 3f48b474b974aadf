"""How an exec's end is read from the status channel: a real kubelet's NonZeroExitCode, kwok's message."""

from __future__ import annotations

import json

import pytest

from isthmus.kube.podexec import _exit_code
from isthmus.rollout.progress import RolloutState
from isthmus.rollout.steps import plan_rollout


@pytest.mark.parametrize(("status", "expected"), [
    ({"status": "Success"}, (0, "")),
    ({"status": "Failure", "reason": "NonZeroExitCode", "message": "command terminated with non-zero exit code",
      "details": {"causes": [{"reason": "ExitCode", "message": "7"}]}},
     (7, "command terminated with non-zero exit code")),
    ({"status": "Failure", "reason": "InternalError",
      "message": "error executing command in container: cmd wait: sh -c exit 3: exit status 3"},
     (3, "error executing command in container: cmd wait: sh -c exit 3: exit status 3")),
    ({"status": "Failure", "reason": "InternalError", "message": "container not found"}, (1, "container not found")),
])
def test_the_exit_code_is_the_commands(status: dict[str, object], expected: tuple[int, str]) -> None:
    assert _exit_code(json.dumps(status).encode()) == expected


def test_a_pending_superuser_survives_the_state_round_trip() -> None:
    from fixtures.labspecs import app_doc, fleet_doc, load

    _fleet, app = load(fleet_doc(), app_doc("pending"))
    state = RolloutState.new(app="pending", kind="apply", revision=1, previous=None, plan=plan_rollout(app))
    assert RolloutState.from_dict(state.to_dict()).superuser_pending is False
    state.superuser_pending = True
    assert RolloutState.from_dict(json.loads(json.dumps(state.to_dict()))).superuser_pending is True
    written_before = {k: v for k, v in state.to_dict().items() if k != "superuserPending"}
    assert RolloutState.from_dict(written_before).superuser_pending is False
