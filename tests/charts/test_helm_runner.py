"""Running the real helm: version checks, ``helm template`` with a cluster's capabilities, Helm's own words."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from _charts import ETCD, REDIS

from isthmus.helm import HELM_ENV, HelmBinary, HelmError, HelmMissing, TemplateRequest, find_helm, template
from isthmus.render.charts import parse_rendered


def _fake_helm(tmp_path: Path, version: str) -> Path:
    exe = tmp_path / "helm"
    exe.write_text(f"#!/bin/sh\necho '{version}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_missing_helm_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(HELM_ENV, str(tmp_path / "nope"))
    with pytest.raises(HelmMissing, match=rf"no helm binary found \({HELM_ENV}=.*nope\); install Helm 3.8.0"):
        find_helm()


def test_too_old_helm_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HelmMissing, match=r"is Helm v3\.2\.4, older than 3\.8\.0"):
        find_helm(_fake_helm(tmp_path, "v3.2.4"))
    assert find_helm(_fake_helm(tmp_path, "v4.0.1")).version == "v4.0.1"


def test_helm_on_path_is_found(helm: HelmBinary, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HELM_ENV)
    monkeypatch.setenv("PATH", f"{helm.path.parent}{os.pathsep}/usr/bin:/bin")
    assert find_helm().path == helm.path and helm.version.startswith("v3.")


def _request(chart: Path, **kw: object) -> TemplateRequest:
    return TemplateRequest(chart=str(chart), release="r", namespace="ns", cluster="c1", **kw)  # type: ignore[arg-type]


async def test_capabilities_reach_the_templates(helm: HelmBinary) -> None:
    """Bitnami's charts adapt the securityContext when the cluster serves OpenShift's API: .Capabilities is ours."""
    plain = parse_rendered(await template(helm, _request(ETCD, kube_version="v1.36.3", api_versions=["v1", "apps/v1"])),
                           chart="etcd", cluster="c1")
    shift = parse_rendered(await template(helm, _request(ETCD, kube_version="v1.36.3",
                                                         api_versions=["v1", "security.openshift.io/v1"])),
                           chart="etcd", cluster="c1")

    def run_as(objs: list[dict[str, object]]) -> object:
        sts = next(o for o in objs if o["kind"] == "StatefulSet")
        return sts["spec"]["template"]["spec"]["containers"][0]["securityContext"].get("runAsUser")  # type: ignore

    assert run_as(plain) == 1001 and run_as(shift) is None


async def test_schema_rejected_values_carry_helms_words(helm: HelmBinary) -> None:
    with pytest.raises(HelmError, match=r"chart .*redis, cluster c1: helm template failed: helm says: values don't "
                                        r"meet the specifications of the schema.*/replica/replicaCount.*want number"):
        await template(helm, _request(REDIS, values={"replica": {"replicaCount": "three"}}))


async def test_a_template_error_carries_helms_words(helm: HelmBinary) -> None:
    with pytest.raises(HelmError, match=r"helm says: execution error at \(redis/templates/NOTES.txt.*Invalid "
                                        r"architecture selected"):
        await template(helm, _request(REDIS, values={"architecture": "bogus"}))


async def test_not_a_chart(helm: HelmBinary, tmp_path: Path) -> None:
    with pytest.raises(HelmError, match=r"helm says: .*Chart.yaml file is missing"):
        await template(helm, _request(tmp_path))
