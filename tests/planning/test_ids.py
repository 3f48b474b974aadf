from __future__ import annotations

import pytest

from isthmus.netplan import PlanError
from isthmus.netplan.ids import IDRequest, assign_cluster_ids


def reqs(*names: str, **given: int) -> list[IDRequest]:
    return [IDRequest(n, given.get(n.replace("-", "_"))) for n in names]


def test_lowest_free_in_spec_order_around_given_and_locked() -> None:
    got = assign_cluster_ids(reqs("a", "b", "c", "d", b=1), locked={"d": 3}, max_connected_clusters=255)
    assert dict(got.ids) == {"b": 1, "d": 3, "a": 2, "c": 4}
    assert got.warnings == ()


def test_spec_overrides_lock_with_warning() -> None:
    got = assign_cluster_ids(reqs("a", a=7), locked={"a": 2}, max_connected_clusters=255)
    assert got.ids["a"] == 7
    assert "replaces 2" in got.warnings[0]


def test_lock_clash_with_spec_is_an_error() -> None:
    with pytest.raises(PlanError, match="b already holds it"):
        assign_cluster_ids(reqs("a", "b", b=2), locked={"a": 2}, max_connected_clusters=255)


def test_locked_id_above_limit() -> None:
    with pytest.raises(PlanError, match=r"outside 1\.\.255"):
        assign_cluster_ids(reqs("a"), locked={"a": 300}, max_connected_clusters=255)


def test_released_ids_are_skipped() -> None:
    got = assign_cluster_ids(reqs("x"), locked={}, max_connected_clusters=255, released=[1, 2])
    assert got.ids["x"] == 3


def test_ids_run_out_with_a_clear_message() -> None:
    names = [f"c{i}" for i in range(257)]
    with pytest.raises(PlanError) as err:
        assign_cluster_ids(reqs(*names), locked={}, max_connected_clusters=255)
    message = str(err.value)
    assert "c255" in message and "1..255" in message and "2 cluster(s) still need one" in message
    assert "maxConnectedClusters: 511" in message
    got = assign_cluster_ids(reqs(*names), locked={}, max_connected_clusters=511)
    assert sorted(got.ids.values()) == list(range(1, 258))
