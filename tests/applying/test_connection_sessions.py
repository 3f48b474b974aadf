"""What a connection learnt from its server lives in its own session, not in a table of the process."""

from __future__ import annotations

from lightkube.config.kubeconfig import KubeConfig, SingleConfig

from isthmus.kube import ClusterConnection, remembered_config_map
from isthmus.kube.records import forget
from isthmus.kube.session import SeenConfigMap, Session


def _config() -> SingleConfig:
    config = KubeConfig.from_server("https://127.0.0.1:1").get()
    assert config is not None
    return config


def test_each_connection_has_its_own_session_unless_it_is_handed_one() -> None:
    a, b = ClusterConnection("a", _config()), ClusterConnection("b", _config())
    a.session.config_maps[("ns", "cm")] = SeenConfigMap("7", {"k": "v"})
    assert remembered_config_map(a, "cm", "ns") == (True, {"k": "v"})
    assert remembered_config_map(b, "cm", "ns") == (False, None)  # b's server told b nothing

    shared = Session()
    c = ClusterConnection("c", _config(), session=shared)
    d = ClusterConnection("c", _config(), session=shared)
    c.session.namespaces.add("isthmus-system")
    assert "isthmus-system" in d.session.namespaces

    forget(a)
    assert remembered_config_map(a, "cm", "ns") == (False, None)


def test_a_store_of_a_higher_layer_is_made_once_per_session() -> None:
    session = Session()
    first = session.part("isthmus.rollout.revisions", dict[str, int])
    first["x"] = 1
    assert session.part("isthmus.rollout.revisions", dict[str, int]) is first
    assert Session().part("isthmus.rollout.revisions", dict[str, int]) == {}
    session.clear()
    assert session.part("isthmus.rollout.revisions", dict[str, int]) == {}
