"""ChartRelease tests: the real ``helm`` (built once into ~/.cache/isthmus/tools), short lab timeouts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fixtures.labspecs import lab_registry
from isthmus.helm import HELM_ENV, HelmBinary, find_helm
from isthmus.kube import ClusterRegistry, ConnectionSettings
from isthmus.lab import Lab
from isthmus.lab.binaries import ensure_helm


def _on_lab(module: object) -> bool:
    marks = getattr(module, "pytestmark", [])
    return any(mark.name == "lab" for mark in (marks if isinstance(marks, list) else [marks]))


#: The lab tests that ``make test`` (CI) runs too: one release of the real etcd chart to three clusters, end to
#: end, and the shared helm runs. The other lab tests (about 4 minutes) run in `make test-charts`: CI keeps that margin.
IN_MAKE_TEST = frozenset({
    "test_etcd_to_three_clusters_holds_what_helm_renders_with_the_isthmus_labels",
    "test_members_with_the_same_values_share_helms_runs_and_an_override_gets_its_own",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests here that run on the lab are marked ``charts`` (``make test-charts`` runs them all) but those of
    :data:`IN_MAKE_TEST`; the others (units, Helm's refusals, the commands' bad input) are fast and run in
    ``make test`` too."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents and _on_lab(getattr(item, "module", None)) \
                and getattr(item, "originalname", item.name) not in IN_MAKE_TEST:
            item.add_marker(pytest.mark.charts)


@pytest.fixture(scope="session")
def helm() -> HelmBinary:
    return find_helm(ensure_helm())


@pytest.fixture(autouse=True)
def helm_on_setting(helm: HelmBinary, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Production code finds helm through its setting, as a user's would."""
    monkeypatch.setenv(HELM_ENV, str(helm.path))
    yield


KEPT = {"namespace/isthmus-system"}
"""Where every app's state lives: shared by the tests, never theirs to delete."""


def _namespaces(lab: Lab) -> dict[str, set[str]]:
    return {s.name: set(lab.kubectl(s.name, "get", "namespaces", "-o", "name").split()) for s in lab.specs}


@pytest.fixture(scope="module", autouse=True)
def releases_removed(request: pytest.FixtureRequest) -> Iterator[None]:
    """A module on the shared lab leaves it as it found it: the namespaces its tests created (their releases,
    pods, Jobs and state) are deleted in every cluster when the module ends, so the chart tests can share a
    session with the rest. (Per module: a module's tests may build on each other's releases.)"""
    if not _on_lab(request.module):
        yield
        return
    lab: Lab = request.getfixturevalue("lab3")
    before = _namespaces(lab)
    yield
    for cluster, names in _namespaces(lab).items():
        created = sorted(names - before[cluster] - KEPT)
        if created:
            lab.kubectl(cluster, "delete", "--wait=false", *created)


@pytest.fixture
async def registry(lab3: Lab) -> AsyncIterator[ClusterRegistry]:
    async with lab_registry(lab3, ConnectionSettings(timeout=5.0, breaker_cooldown=2.0)) as connections:
        yield connections
