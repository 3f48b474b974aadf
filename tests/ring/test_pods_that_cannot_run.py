"""Pods that cannot run show the container's real error, as a kubelet shows it (issue 18, bad input)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

from .conftest import Ring

pytestmark = [pytest.mark.lab, pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(600)]


def _pod(name: str, image: str, command: list[str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "cassandra", "image": image}
    if command:
        container["command"] = command
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "broken"},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 5}}


def _apply(ring: Ring, doc: dict[str, Any]) -> None:
    path = ring.files[0].with_name(f"{doc['metadata']['name']}.yaml")
    path.write_text(yaml.safe_dump(doc))
    ring.lab.kubectl("us", "apply", "-f", str(path))


def _wait(ring: Ring, name: str, check: Any, seconds: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        doc: dict[str, Any] = json.loads(ring.lab.kubectl("us", "get", "pod", "-n", "broken", name, "-o", "json"))
        if check(doc):
            return doc
        assert time.monotonic() < deadline, json.dumps(doc.get("status"), indent=1)
        time.sleep(2)


@pytest.fixture(scope="module")
def broken(ring: Ring) -> Ring:
    ring.lab.kubectl("us", "create", "namespace", "broken")
    return ring


def test_a_version_maven_central_does_not_have_is_an_image_pull_error_with_mavens_words(broken: Ring) -> None:
    _apply(broken, _pod("no-such-version", "cassandra:0.0.1"))
    doc = _wait(broken, "no-such-version", lambda d: any(
        (s.get("state", {}).get("waiting") or {}).get("reason") in ("ErrImagePull", "ImagePullBackOff")
        for s in d["status"].get("containerStatuses", [])))
    waiting = doc["status"]["containerStatuses"][0]["state"]["waiting"]
    assert "0.0.1" in waiting["message"]
    events = broken.lab.kubectl("us", "get", "events", "-n", "broken", "--field-selector",
                                "involvedObject.name=no-such-version", "-o", "json")
    assert any(e["reason"] == "Failed" and "0.0.1" in e["message"] for e in json.loads(events)["items"])


def test_a_container_that_exits_backs_off_with_its_exit_code_and_its_log(broken: Ring) -> None:
    _apply(broken, _pod("exits", "cassandra:5.0.9", ["sh", "-c", "echo 'cassandra.yaml: no such option' >&2; exit 3"]))
    doc = _wait(broken, "exits", lambda d: any(
        s.get("restartCount", 0) >= 1 and (s.get("state", {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff"
        for s in d["status"].get("containerStatuses", [])), 240)
    status = doc["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert "no such option" in status["lastState"]["terminated"]["message"]
    assert status["ready"] is False
    log = broken.lab.kubectl("us", "logs", "-n", "broken", "exits")  # the last run, as a kubelet keeps it
    assert "cassandra.yaml: no such option" in log
