"""The guard in the app: sidecar, loopback CQL, the policy ConfigMap, the client port, and disabled = before."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import pytest
import yaml

from isthmus.cqlguard.classify import classify
from isthmus.cqlguard.policy import Identity, Policy
from isthmus.image import RELEASED
from isthmus.netplan import plan
from isthmus.render import render_cassandra
from isthmus.render.access import (
    FLOWS_PATH,
    GUARD_METRICS_PORT,
    POLICY_PATH,
    SUPERUSER_RULE,
    guarded_cassandra_yaml,
    superuser_rule,
)
from isthmus.render.cassandra_config import cassandra_yaml
from isthmus.render.errors import RenderError
from isthmus.render.netpolicy import PolicyFlavor, render_policies
from isthmus.spec import SpecError

from ._access import RULES, documents, load, with_access

Obj = dict[str, Any]


def _objects(access: dict[str, Any] | None) -> list[Obj]:
    fleet, app = with_access(access)
    m = render_cassandra(app, fleet)
    return [o for c in m.clusters for o in m.for_cluster(c)]


def _kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def _pod(sts: Obj) -> Obj:
    pod: Obj = sts["spec"]["template"]["spec"]
    return pod


GUARDED = {"enabled": True, "rules": RULES}


def test_every_statefulset_runs_the_guard_in_front_of_loopback_cassandra() -> None:
    statefulsets = _kind(_objects(GUARDED), "StatefulSet")
    assert len(statefulsets) == 9
    for sts in statefulsets:
        cassandra, guard = _pod(sts)["containers"]
        assert cassandra["name"] == "cassandra" and guard["name"] == "cqlguard"
        assert guard["image"] == str(RELEASED) and "@sha256:" in guard["image"]
        assert [guard["command"][0], *guard["args"]] == [
            "isthmus", "guard", "run", "--listen", "$(POD_IP):9042", "--listen", "127.0.0.1:9042",
            "--upstream", "127.0.0.2:9042",
            "--policy", POLICY_PATH, "--flows", FLOWS_PATH, "--flows-max-bytes", str(64 * 1024 * 1024),
            "--metrics", f"0.0.0.0:{GUARD_METRICS_PORT}"]
        assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in guard["env"]
        assert guard["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": GUARD_METRICS_PORT}
        assert guard["livenessProbe"]["httpGet"]["port"] == GUARD_METRICS_PORT
        assert guard["resources"]["requests"] == guard["resources"]["limits"]  # Guaranteed QoS kept
        # The Cassandra container keeps its nodetool (JMX) readiness probe.
        assert "nodetool statusbinary" in cassandra["readinessProbe"]["exec"]["command"][-1]
        mounts = {m["mountPath"]: m["name"] for m in guard["volumeMounts"]}
        volumes = {v["name"]: v for v in _pod(sts)["volumes"]}
        assert volumes[mounts["/etc/cqlguard"]]["configMap"] == {"name": "orders-cqlguard"}  # no subPath: updates
        # Two capped flows files fit the volume, so the kubelet never evicts the pod for its logs.
        assert volumes[mounts["/var/log/cqlguard"]]["emptyDir"] == {"sizeLimit": "192Mi"}


def test_9042_is_only_on_the_sidecar() -> None:
    for sts in _kind(_objects(GUARDED), "StatefulSet"):
        cassandra, guard = _pod(sts)["containers"]
        assert 9042 not in [p["containerPort"] for p in cassandra["ports"]]
        assert {"name": "cql", "containerPort": 9042, "protocol": "TCP"} in guard["ports"]
        assert [p["containerPort"] for p in cassandra["ports"]] == [7000, 7001, 7199]
    for svc in _kind(_objects(GUARDED), "Service"):  # Services still target 9042: the guard
        assert all(p["targetPort"] in (7000, 7001, 9042) for p in svc["spec"]["ports"])


def test_cassandra_serves_cql_on_loopback_and_advertises_the_pod_ip() -> None:
    for cm in _kind(_objects(GUARDED), "ConfigMap"):
        if "cassandra.yaml" not in cm["data"]:
            continue
        conf = yaml.safe_load(cm["data"]["cassandra.yaml"])
        assert conf["rpc_address"] == "127.0.0.2"
        assert conf["broadcast_rpc_address"] == "${POD_IP}"
        assert conf["native_transport_port"] == 9042
        assert cm["data"]["cassandra.yaml"].startswith("# Rendered by isthmus")


def test_rewriting_cassandra_yaml_keeps_everything_else_byte_for_byte() -> None:
    _fleet, app = with_access(None)
    dc = app.spec.datacenters[0]
    plain = cassandra_yaml(app, dc, cluster_domain="cluster.local", clusterset_domain="clusterset.local")
    guarded = guarded_cassandra_yaml(plain)
    assert guarded == plain.replace("rpc_address: 0.0.0.0\n", "rpc_address: 127.0.0.2\n")


def test_the_policy_config_map_holds_the_spec_rules() -> None:
    fleet, app = with_access(GUARDED)
    m = render_cassandra(app, fleet)
    for cluster in m.clusters:
        (cm,) = [o for o in m.for_cluster(cluster) if o["metadata"]["name"] == "orders-cqlguard"]
        assert cm["metadata"]["namespace"] == "cassandra"
        text = cm["data"]["policy.yaml"]
        expected = [{k: v for k, v in r.items() if k != "clientLabels"} for r in RULES]
        assert yaml.safe_load(text) == {"rules": [*expected, superuser_rule()]}
        assert [r.name for r in Policy.from_yaml(text).document.rules] == ["sales-app", "reports", SUPERUSER_RULE]


def _decide(user: str, address: str, cql: str) -> bool:
    fleet, app = with_access(GUARDED)
    (cm,) = [o for o in render_cassandra(app, fleet).for_cluster(fleet.spec.clusters[0].name)
             if o["metadata"]["name"] == "orders-cqlguard"]
    policy = Policy.from_yaml(cm["data"]["policy.yaml"])
    return policy.decide(Identity(address=ipaddress.ip_address(address), user=user), classify(cql)).allowed


@pytest.mark.parametrize("user", ["cassandra-admin", "cassandra"])
def test_the_superuser_may_do_anything_but_only_from_the_pods_loopback(user: str) -> None:
    # Through pods/portforward (or exec) the connection comes from 127.0.0.1 inside the pod.
    for cql in ("CREATE ROLE app WITH PASSWORD = 'x' AND LOGIN = true",
                "ALTER KEYSPACE system_auth WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3}",
                "INSERT INTO sales.orders (id) VALUES (1)", "DROP TABLE sales.orders"):
        assert _decide(user, "127.0.0.1", cql), cql
        # The same login from the network gets only the spec's rules, which name neither role.
        assert not _decide(user, "10.1.0.7", cql), cql


def test_a_spec_rule_may_not_take_the_superuser_rules_name() -> None:
    rule = {**copy.deepcopy(RULES[0]), "name": SUPERUSER_RULE}
    with pytest.raises(RenderError, match="Isthmus's own rule"):
        _objects({"enabled": True, "rules": [rule]})


def test_a_policy_only_change_does_not_touch_the_pod_templates() -> None:
    changed = copy.deepcopy(RULES)
    changed[1]["allow"][0]["actions"] = ["select", "insert"]
    before, after = _objects(GUARDED), _objects({"enabled": True, "rules": changed})
    assert _kind(before, "StatefulSet") == _kind(after, "StatefulSet")
    policy = [o for o in after if o["metadata"]["name"] == "orders-cqlguard"]
    assert policy and policy != [o for o in before if o["metadata"]["name"] == "orders-cqlguard"]


def test_turning_the_guard_on_rolls_the_pods() -> None:
    off, on = _kind(_objects(None), "StatefulSet"), _kind(_objects(GUARDED), "StatefulSet")
    key = "isthmus.dev/config-hash"
    assert all(a["spec"]["template"]["metadata"]["annotations"][key]
               != b["spec"]["template"]["metadata"]["annotations"][key] for a, b in zip(off, on, strict=True))


@pytest.mark.parametrize("access", [{"enabled": False}, {"enabled": False, "rules": RULES},
                                    {"enabled": False, "guardImage": "x/y@sha256:" + "1" * 64,
                                     "enforcement": "legacyCiliumL7"},
                                    {"enabled": True, "enforcement": "legacyCiliumL7"}])
def test_access_without_the_guard_renders_what_it_rendered_before(access: dict[str, Any]) -> None:
    assert _objects(access) == _objects(None)


def test_ipv6_pods_give_the_guard_a_bracketed_listen_address() -> None:
    fleet_doc, app_doc = documents()
    for cluster in fleet_doc["spec"]["clusters"]:
        cluster["ipFamily"] = "ipv6"
    app_doc["spec"]["access"] = GUARDED
    fleet, app = load(fleet_doc, app_doc)
    m = render_cassandra(app, fleet)
    for sts in _kind([o for c in m.clusters for o in m.for_cluster(c)], "StatefulSet"):
        args = _pod(sts)["containers"][1]["args"]
        assert args[args.index("--listen") + 1] == "[$(POD_IP)]:9042"


def test_client_policies_target_the_guard_port() -> None:
    fleet, app = with_access(GUARDED)
    p = plan(fleet)
    cilium = render_policies(app, fleet, p).for_cluster("eu-west")
    (clients,) = [o for o in cilium if o["metadata"]["name"] == "orders-clients"]
    assert {port["port"] for r in clients["spec"]["ingress"] for port in r["toPorts"][0]["ports"]} == {"9042"}
    assert clients["spec"]["ingress"][0]["fromEndpoints"][0]["matchLabels"] == {"app": "reports"}
    k8s = render_policies(app, fleet, p, flavor=PolicyFlavor.KUBERNETES).for_cluster("eu-west")
    (clients,) = [o for o in k8s if o["metadata"]["name"] == "orders-clients"]
    assert clients["spec"]["ingress"][0]["ports"] == [{"port": 9042, "protocol": "TCP"}]


def test_a_bad_rule_is_a_located_spec_error() -> None:
    fleet, app = documents()
    bad = copy.deepcopy(RULES)
    bad[1]["allow"][0]["actions"] = ["selekt"]
    app["spec"]["access"] = {"enabled": True, "rules": bad}
    with pytest.raises(SpecError) as caught:
        load(fleet, app)
    (problem,) = caught.value.problems
    assert problem.field == "spec.access.rules[1]" and problem.line is not None
    assert "allow[0].actions: unknown action(s) selekt" in problem.message


@pytest.mark.parametrize(("rule_change", "message"), [
    ({"clientLabels": ["app"]}, "clientLabels must be a non-empty map"),
    ({"identities": {}}, "identities: give at least one of cidrs"),
    ({"allow": [{"actions": ["select"], "tables": ["nodot"]}]}, "allow[0].tables: table pattern 'nodot'"),
    ({"shout": True}, "shout: Extra inputs are not permitted"),
])
def test_rules_are_validated_by_cqlguard_at_load_time(rule_change: dict[str, Any], message: str) -> None:
    fleet, app = documents()
    app["spec"]["access"] = {"rules": [{**copy.deepcopy(RULES[0]), **rule_change}]}
    with pytest.raises(SpecError, match=None) as caught:
        load(fleet, app)
    assert message in str(caught.value)


def test_rule_names_are_unique() -> None:
    fleet, app = documents()
    app["spec"]["access"] = {"rules": [RULES[0], RULES[0]]}
    with pytest.raises(SpecError, match="two access rules are named 'sales-app'"):
        load(fleet, app)
