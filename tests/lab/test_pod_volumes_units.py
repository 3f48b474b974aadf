"""The lab's pod volumes: a ConfigMap volume marked ``optional`` whose ConfigMap is absent is an empty folder (as
the kubelet makes it); one that is not optional keeps the pod waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from isthmus.lab.pods.api import RuntimeApi
from isthmus.lab.pods.volumes import VolumeNotReady, prepare_volumes


class _Objects:
    """An API that holds some ConfigMaps (what prepare_volumes reads: GET by path)."""

    def __init__(self, objects: Mapping[str, dict[str, Any]]) -> None:
        self.objects = dict(objects)

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        return self.objects.get(path)


def _pod(volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"namespace": "ring", "name": "p"}, "spec": {"volumes": volumes}}


def test_an_absent_optional_config_map_is_an_empty_folder_and_a_present_one_is_written(tmp_path: Path) -> None:
    api = cast(RuntimeApi, _Objects({"/api/v1/namespaces/ring/configmaps/here": {"data": {"p-0": "10.0.0.3"}}}))
    pod = _pod([{"name": "gone", "configMap": {"name": "absent", "optional": True}},
                {"name": "here", "configMap": {"name": "here", "optional": True}}])
    folders = asyncio.run(prepare_volumes(api, pod, tmp_path))
    assert folders["gone"].is_dir() and list(folders["gone"].iterdir()) == []
    assert (folders["here"] / "p-0").read_text() == "10.0.0.3"


def test_an_absent_config_map_that_is_not_optional_keeps_the_pod_waiting(tmp_path: Path) -> None:
    api = cast(RuntimeApi, _Objects({}))
    with pytest.raises(VolumeNotReady, match='configmap "absent" not found'):
        asyncio.run(prepare_volumes(api, _pod([{"name": "v", "configMap": {"name": "absent"}}]), tmp_path))
