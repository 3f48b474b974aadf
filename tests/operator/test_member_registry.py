"""The member registry: Secrets in, connections and Reachable conditions out; no cluster needed."""

from __future__ import annotations

import json

from isthmus.kube import Reach
from isthmus.kube.members import MemberSecret
from isthmus.operator.members import MemberRegistry


def kubeconfig(server: str, user: str = "admin") -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
        "clusters": [{"name": "cl", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": user, "user": {"token": f"token-of-{user}"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "cl", "user": user}}],
    })


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_add_rotate_and_remove_take_effect_on_sync() -> None:
    clock = Clock()
    reg = MemberRegistry(clock=clock)
    changes = reg.sync([MemberSecret("c1", "m1", kubeconfig("https://127.0.0.1:1")),
                        MemberSecret("c2", "m2", kubeconfig("https://127.0.0.1:2"))])
    assert changes.added == ("c1", "c2") and reg.names() == ["c1", "c2"]
    first = reg.state("c2")
    assert first is not None and first.connection is not None
    old_conn = first.connection

    assert not reg.sync([MemberSecret("c1", "m1", kubeconfig("https://127.0.0.1:1")),
                         MemberSecret("c2", "m2", kubeconfig("https://127.0.0.1:2"))]), "same Secrets: no change"

    reg.observe("c2", Reach.REACHED)
    changes = reg.sync([MemberSecret("c1", "m1", kubeconfig("https://127.0.0.1:1")),
                        MemberSecret("c2", "m2", kubeconfig("https://127.0.0.1:2", user="rotated"))])
    assert changes.rotated == ("c2",)
    state = reg.state("c2")
    assert state is not None and state.connection is not old_conn
    assert state.status == "True" and state.last_seen == 1000.0, "rotation keeps the reachability history"

    changes = reg.sync([MemberSecret("c2", "m2", kubeconfig("https://127.0.0.1:2", user="rotated"))])
    assert changes.removed == ("c1",) and reg.names() == ["c2"]
    [(name, cond)] = reg.conditions(["c1"])
    assert (name, cond.status, cond.reason) == ("c1", "False", "NotRegistered")


def test_a_bad_kubeconfig_is_a_condition_not_a_crash() -> None:
    reg = MemberRegistry()
    changes = reg.sync([MemberSecret("c1", "m1", "not: [a, kubeconfig"),
                        MemberSecret("c2", "m2", "", error="Secret m2 has no 'kubeconfig' key")])
    assert changes.invalid == ("c1", "c2")
    assert "c1" not in reg and reg.names() == []
    conds = dict(reg.conditions(["c1", "c2"]))
    assert conds["c1"].status == "False" and conds["c1"].reason == "InvalidKubeconfig"
    assert "no 'kubeconfig' key" in conds["c2"].message


def test_reachable_flips_with_observations_and_keeps_last_seen() -> None:
    clock = Clock()
    reg = MemberRegistry(clock=clock)
    reg.sync([MemberSecret("c1", "m1", kubeconfig("https://127.0.0.1:1"))])
    [(_, cond)] = reg.conditions(["c1"])
    assert cond.status == "Unknown"
    reg.observe("c1", Reach.REACHED)
    clock.now = 1030.0
    reg.observe("c1", Reach.UNREACHABLE, "no answer within 5s")
    [(_, cond)] = reg.conditions(["c1"])
    assert (cond.status, cond.reason, cond.message) == ("False", "Unreachable", "no answer within 5s")
    assert cond.last_seen_time == "1970-01-01T00:16:40Z" and cond.last_transition_time == "1970-01-01T00:17:10Z"
    reg.observe("c1", Reach.FAILED, "403")  # the server answered with an error: says nothing about reach
    assert reg.conditions(["c1"])[0][1].status == "False"


def test_duplicate_registrations_use_the_first_secret() -> None:
    reg = MemberRegistry()
    reg.sync([MemberSecret("c1", "a", kubeconfig("https://127.0.0.1:1")),
              MemberSecret("c1", "b", kubeconfig("https://127.0.0.1:9"))])
    state = reg.state("c1")
    assert state is not None and state.secret == "a"
