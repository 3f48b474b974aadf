"""The deprecated Cilium form: one CNP with Cassandra L7 rules instead of the sidecar, never beside it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from isthmus.netplan import plan
from isthmus.render import RenderError, render_cassandra
from isthmus.render.access import DEPRECATED_ANNOTATION
from isthmus.render.netpolicy import CILIUM_CLUSTER_LABEL, PolicyFlavor, render_policies
from isthmus.spec import CassandraCluster, Fleet

from ._access import LEGACY_RULES, with_access

Obj = dict[str, Any]
LEGACY = {"enabled": True, "enforcement": "legacyCiliumL7", "rules": LEGACY_RULES}
BUILTIN = [{"query_action": "select", "query_table": r"^system\.(local|peers|peers_v2)$"},
           {"query_action": "select", "query_table": r"^system_schema\.[^.]*$"},
           {"query_action": "select", "query_table": r"^system_virtual_schema\.[^.]*$"}]


def _policies(fleet: Fleet, app: CassandraCluster, **kw: Any) -> list[Obj]:
    return list(render_policies(app, fleet, plan(fleet), **kw).for_cluster("eu-west"))


def _legacy() -> Obj:
    fleet, app = with_access(LEGACY)
    (cnp,) = [o for o in _policies(fleet, app) if o["metadata"]["name"] == "orders-clients-legacy-l7"]
    return cnp


def test_one_ingress_rule_per_access_rule_with_cassandra_l7_rules() -> None:
    cnp = _legacy()
    assert cnp["apiVersion"] == "cilium.io/v2" and cnp["kind"] == "CiliumNetworkPolicy"
    assert "deprecated" in cnp["metadata"]["annotations"][DEPRECATED_ANNOTATION]
    sales, reports_pods, reports_world = cnp["spec"]["ingress"]
    # Narrow CIDRs are the rule's identity: its clientLabels pods are not granted (Cilium cannot AND them).
    assert sales["fromCIDR"] == ["10.20.0.0/16"] and "fromEndpoints" not in sales
    (port,) = sales["toPorts"]
    assert port["ports"] == [{"port": "9042", "protocol": "TCP"}]
    assert port["rules"]["l7proto"] == "cassandra"
    tables = [r"^sales\.orders$", r"^sales\.line_[^.]*$"]
    assert port["rules"]["l7"] == BUILTIN + [{"query_action": a, "query_table": t}
                                             for a in ("select", "delete", "insert", "update") for t in tables]
    # Any address (0.0.0.0/0): the clientLabels pods, in the fleet's clusters, and the CIDR.
    (peer,) = reports_pods["fromEndpoints"]
    assert peer["matchLabels"] == {"app": "reports"}
    assert peer["matchExpressions"][0]["key"] == CILIUM_CLUSTER_LABEL
    assert reports_world["fromCIDR"] == ["0.0.0.0/0"]
    for rule in (reports_pods, reports_world):
        assert rule["toPorts"][0]["rules"]["l7"] == [
            *BUILTIN, {"query_action": "select", "query_table": r"^sales\.[^.]*$"}]


def test_legacy_replaces_the_l4_client_policy_and_the_sidecar() -> None:
    fleet, app = with_access(LEGACY)
    names = {o["metadata"]["name"] for o in _policies(fleet, app)}
    assert names == {"orders-default-deny", "orders-internode", "orders-clients-legacy-l7"}
    m = render_cassandra(app, fleet)
    for sts in [o for c in m.clusters for o in m.for_cluster(c) if o["kind"] == "StatefulSet"]:
        assert [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]] == ["cassandra"]
    guarded = with_access({**LEGACY, "enforcement": "guard"})
    assert not any(o["metadata"]["name"].endswith("-legacy-l7") for o in _policies(*guarded))


def test_what_cilium_cannot_express_is_refused_not_widened() -> None:
    users = copy.deepcopy(LEGACY_RULES)
    users[0]["identities"]["users"] = ["sales_app"]
    fleet, app = with_access({**LEGACY, "rules": users})
    with pytest.raises(RenderError, match=r"rules\[0\].*cannot match users"):
        _policies(fleet, app)
    schema = copy.deepcopy(LEGACY_RULES)
    schema[0]["allow"] = [{"actions": ["create_index"], "tables": ["sales.*"]}]
    fleet, app = with_access({**LEGACY, "rules": schema})
    with pytest.raises(RenderError, match="'create_index' cannot be expressed"):
        _policies(fleet, app)
    fleet, app = with_access(LEGACY)
    with pytest.raises(RenderError, match="needs Cilium network policy"):
        _policies(fleet, app, flavor=PolicyFlavor.KUBERNETES)


@pytest.mark.slow
def test_the_legacy_policy_is_schema_valid() -> None:
    from fixtures.cnp import cnp_validator, validate_cnp

    assert validate_cnp(cnp_validator(), [_legacy()]) == {"checked": 1, "errors": []}
