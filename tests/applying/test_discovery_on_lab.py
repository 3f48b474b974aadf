"""The mesh's discovery objects are deployed, pruned and deleted with the app (issue 18, item 7).

On the lab's real API servers, which serve the MCS API's CRDs as an MCS-capable cluster does
(the lab installs them at `lab up`). The lab's Fleet has the default mesh, Cilium: every member
gets ServiceExports for its datacenters' seeds and client Services and the fleet-wide
``<app>-client`` Service, global with local affinity.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load, write_specs
from isthmus.kube import ApplyAction, ClusterRegistry, absent_kinds, reconfirm_kinds
from isthmus.lab import Lab
from isthmus.rollout import RolloutOptions, apply_rollout

pytestmark = pytest.mark.lab
ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
FAST = RolloutOptions(poll_interval=0.3)
MCS_CRD = "serviceexports.multicluster.x-k8s.io"


def exports(lab: Lab, cluster: str, app: str) -> set[str]:
    out = json.loads(lab.kubectl(cluster, "get", "serviceexports.multicluster.x-k8s.io", "-n", app,
                                 "-l", f"isthmus.dev/app={app}", "-o", "json"))
    return {i["metadata"]["name"] for i in out["items"]}


def inventory(lab: Lab, cluster: str, app: str) -> set[tuple[str, str]]:
    cm = json.loads(lab.kubectl(cluster, "get", "configmap", f"isthmus-inventory-{app}", "-n", app, "-o", "json"))
    return {(r["kind"], r["name"]) for r in json.loads(cm["data"]["objects"])}


def env(lab: Lab) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "KUBECONFIG": str(lab.kubeconfig), "HOME": str(Path.home())}


def isthmus(lab: Lab, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ISTHMUS, *map(str, args)], capture_output=True, text=True, env=env(lab), timeout=180)


def two_dcs_in_c2(name: str) -> dict[str, Any]:
    """dc1 on c1, dc2 and dc2b on c2 (one rack of one node each on c2, so the nodes suffice), dc3 on c3."""
    doc = app_doc(name)
    dcs = doc["spec"]["datacenters"]
    dcs[1].update(size=1, racks=[{"name": "ra", "zone": "region-2a"}])
    dcs.insert(2, {"name": "dc2b", "cluster": "c2", "size": 1, "racks": [{"name": "ra", "zone": "region-2b"}]})
    return doc


async def test_apply_creates_the_discovery_objects_in_each_member(lab3: Lab, registry: ClusterRegistry,
                                                                  tmp_path: Path) -> None:
    fleet, app = load(fleet_doc(), app_doc("dsc"))
    result = await apply_rollout(app, fleet, registry, FAST)
    assert result.ok, result.state.to_dict()
    for i, cluster in enumerate(("c1", "c2", "c3"), start=1):
        assert exports(lab3, cluster, "dsc") == {"dsc-client", f"dsc-dc{i}-seeds", f"dsc-dc{i}-client"}
        client = json.loads(lab3.kubectl(cluster, "get", "service", "dsc-client", "-n", "dsc", "-o", "json"))
        notes = client["metadata"]["annotations"]
        assert (notes["service.cilium.io/global"], notes["service.cilium.io/shared"],
                notes["service.cilium.io/affinity"]) == ("true", "true", "local")
        assert client["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "isthmus"
        assert len(notes["isthmus.dev/content-hash"]) == 16
        assert {("ServiceExport", f"dsc-dc{i}-seeds"), ("Service", "dsc-client")} <= inventory(lab3, cluster, "dsc")
        created = {str(ref) for ref, action in result.reports[cluster].items() if action is ApplyAction.CREATED}
        assert f"ServiceExport dsc/dsc-dc{i}-seeds" in created
    # Through server-side apply, by Isthmus' field manager, like every other object of the app.
    export = json.loads(lab3.kubectl("c2", "get", "serviceexport", "dsc-dc2-seeds", "-n", "dsc", "-o", "json",
                                     "--show-managed-fields"))
    assert [(f["manager"], f["operation"]) for f in export["metadata"]["managedFields"]] == [("isthmus", "Apply")]
    # A hand deletion is drift like any other: the next `isthmus apply` puts the export back.
    lab3.kubectl("c3", "delete", "serviceexport", "dsc-dc3-seeds", "-n", "dsc")
    files = write_specs(tmp_path, fleet_doc(), app_doc("dsc"))
    again = isthmus(lab3, "apply", *[a for f in files for a in ("-f", f)])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "dsc-dc3-seeds" in exports(lab3, "c3", "dsc")


async def test_removing_a_datacenter_prunes_its_discovery_objects(lab3: Lab, registry: ClusterRegistry) -> None:
    fleet, app = load(fleet_doc(), two_dcs_in_c2("dpr"))
    assert (await apply_rollout(app, fleet, registry, FAST)).ok
    assert exports(lab3, "c2", "dpr") == {"dpr-client", "dpr-dc2-seeds", "dpr-dc2-client", "dpr-dc2b-seeds",
                                          "dpr-dc2b-client"}
    doc = two_dcs_in_c2("dpr")
    doc["spec"]["datacenters"] = [d for d in doc["spec"]["datacenters"] if d["name"] != "dc2b"]
    _, smaller = load(fleet_doc(), doc)
    result = await apply_rollout(smaller, fleet, registry, FAST)
    assert result.ok, result.state.to_dict()
    pruned = {str(ref) for ref, action in result.reports["c2"].items() if action is ApplyAction.PRUNED}
    assert {"ServiceExport dpr/dpr-dc2b-seeds", "ServiceExport dpr/dpr-dc2b-client"} <= pruned
    assert exports(lab3, "c2", "dpr") == {"dpr-client", "dpr-dc2-seeds", "dpr-dc2-client"}
    assert ("ServiceExport", "dpr-dc2b-seeds") not in inventory(lab3, "c2", "dpr")
    assert exports(lab3, "c1", "dpr") == {"dpr-client", "dpr-dc1-seeds", "dpr-dc1-client"}  # untouched


def test_isthmus_delete_removes_the_discovery_objects(lab3: Lab, tmp_path: Path) -> None:
    files = write_specs(tmp_path, fleet_doc(), app_doc("ddl"))
    args = [a for f in files for a in ("-f", f)]
    applied = isthmus(lab3, "apply", *args)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert all(exports(lab3, c, "ddl") for c in ("c1", "c2", "c3"))
    deleted = isthmus(lab3, "delete", "--yes", *args)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    for cluster in ("c1", "c2", "c3"):
        assert exports(lab3, cluster, "ddl") == set()
        left = lab3.kubectl(cluster, "get", "services", "-n", "ddl", "-l", "isthmus.dev/app=ddl", "-o", "name")
        assert left.strip() == "", left


def test_a_member_without_the_mcs_crd_is_refused_before_any_write(lab3: Lab, tmp_path: Path) -> None:
    files = write_specs(tmp_path, fleet_doc(), app_doc("dcr"))
    template = resources.files("isthmus.lab").joinpath("templates/mcs-crds.yaml")
    lab3.kubectl("c3", "delete", "crd", MCS_CRD, "--wait=true", timeout=60)
    try:
        refused = isthmus(lab3, "apply", *[a for f in files for a in ("-f", f)])
    finally:
        crds = tmp_path / "mcs-crds.yaml"
        crds.write_text(template.read_text())
        lab3.kubectl("c3", "apply", "-f", str(crds))
        lab3.kubectl("c3", "wait", "--for=condition=Established", f"crd/{MCS_CRD}", "--timeout=60s", timeout=70)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr
    (line,) = errors
    assert "cluster c3 lacks the CustomResourceDefinition serviceexports.multicluster.x-k8s.io" in line
    assert "sigs.k8s.io/mcs-api" in line and "nothing was applied" in line
    assert "cluster c1" not in line and "cluster c2" not in line  # they serve it
    # Nothing was written anywhere: no namespace, no lock, no revision.
    for cluster in ("c1", "c2", "c3"):
        ns = lab3.kubectl(cluster, "get", "namespace", "dcr", "-o", "name", "--ignore-not-found")
        assert ns.strip() == "", (cluster, ns)
    held = lab3.kubectl("c1", "get", "leases,configmaps", "-A", "-o", "name", "-l", "isthmus.dev/app=dcr")
    assert held.strip() == "", held


async def test_a_members_recent_answer_on_a_kind_stands_and_a_reconfirm_drops_a_kind_it_no_longer_serves(
        lab3: Lab, registry: ClusterRegistry, tmp_path: Path) -> None:
    """The operator's shortcut (isthmus.kube.customkinds): a kind the connection found served less than
    ``fresh_for`` seconds ago is not read again; the member probe's reconfirm forgets one whose CRD is gone, so
    the next check reads, and refuses."""
    conn = registry["c3"]
    export = {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
              "metadata": {"name": "x", "namespace": "x"}}
    now = [1000.0]

    def clock() -> float:
        return now[0]

    def reads() -> int:
        return conn.requests["get"]

    assert await absent_kinds(conn, [export], fresh_for=30, clock=clock) == ()
    first = reads()
    now[0] += 29
    assert await absent_kinds(conn, [export], fresh_for=30, clock=clock) == () and reads() == first  # trusted
    assert await absent_kinds(conn, [export], fresh_for=0, clock=clock) == () and reads() == first + 1  # the CLI
    now[0] += 31
    assert await absent_kinds(conn, [export], fresh_for=30, clock=clock) == () and reads() == first + 2  # stale
    assert await reconfirm_kinds(conn, clock=clock) == () and reads() == first + 3
    template = resources.files("isthmus.lab").joinpath("templates/mcs-crds.yaml")
    lab3.kubectl("c3", "delete", "crd", MCS_CRD, "--wait=true", timeout=60)
    try:
        gone = await reconfirm_kinds(conn, clock=clock)
        assert [k.kind for k in gone] == ["ServiceExport"]
        absent = await absent_kinds(conn, [export], fresh_for=30, clock=clock)  # forgotten: read, and absent
        assert [k.kind for k in absent] == ["ServiceExport"] and reads() == first + 5
    finally:
        crds = tmp_path / "mcs-crds.yaml"
        crds.write_text(template.read_text())
        lab3.kubectl("c3", "apply", "-f", str(crds))
        lab3.kubectl("c3", "wait", "--for=condition=Established", f"crd/{MCS_CRD}", "--timeout=60s", timeout=70)
