"""Checks that span documents: an app against the Fleet it lands in.

Each problem points at the app document's line, so the user fixes the right file.
"""

from __future__ import annotations

import re

from .cassandra import CassandraCluster
from .charts import ChartRelease, bind_release
from .errors import Problem, SpecError
from .fleet import Fleet
from .loading import Document, SpecSet

__all__ = ["check_consistency", "require_fleet"]


def _cassandra_problems(doc: Document, app: CassandraCluster, fleet: Fleet) -> list[Problem]:
    problems: list[Problem] = []
    clusters = {c.name: c for c in fleet.spec.clusters}
    for i, dc in enumerate(app.spec.datacenters):
        path = ("spec", "datacenters", i)
        cluster = clusters.get(dc.cluster)
        if cluster is None:
            problems.append(Problem(
                f"datacenter {dc.name!r} is mapped to cluster {dc.cluster!r}, which Fleet "
                f"{fleet.metadata.name!r} does not have (clusters: {', '.join(clusters)})",
                doc.file, doc.line_of((*path, "cluster")), f"spec.datacenters[{i}].cluster"))
            continue
        for j, rack in enumerate(dc.racks):
            if rack.zone not in cluster.zone_names:
                problems.append(Problem(
                    f"rack {rack.name!r} of datacenter {dc.name!r} is pinned to zone {rack.zone!r}, but cluster "
                    f"{cluster.name!r} has zones {', '.join(cluster.zone_names)}",
                    doc.file, doc.line_of((*path, "racks", j, "zone")),
                    f"spec.datacenters[{i}].racks[{j}].zone"))
    problems += [Problem(message, doc.file, doc.line_of(where), _dotted(where))
                 for where, message in app.spec.keyspace_problems()]
    if app.spec.fleet is not None and app.spec.fleet != fleet.metadata.name:
        problems.append(Problem(
            f"spec.fleet is {app.spec.fleet!r} but the Fleet given is {fleet.metadata.name!r}",
            doc.file, doc.line_of(("spec", "fleet")), "spec.fleet"))
    return problems


def _dotted(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _path(field: str) -> tuple[str | int, ...]:
    """``spec.overrides[0].cluster`` -> ``("spec", "overrides", 0, "cluster")``."""
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", field))


def _chart_problems(doc: Document, app: ChartRelease, fleet: Fleet) -> list[Problem]:
    try:
        bind_release(app, fleet)
    except SpecError as exc:
        return [Problem(p.message, doc.file, doc.line_of(_path(p.field)) if p.field else doc.line_of(()), p.field)
                for p in exc.problems]
    return []


def check_consistency(specs: SpecSet) -> None:
    """Raise one SpecError listing every cross-document problem, or return quietly."""
    fleet = specs.fleet
    if fleet is None:
        return
    problems: list[Problem] = []
    for doc in specs.documents:
        if isinstance(doc.model, CassandraCluster):
            problems += _cassandra_problems(doc, doc.model, fleet)
        elif isinstance(doc.model, ChartRelease):
            problems += _chart_problems(doc, doc.model, fleet)
    if problems:
        raise SpecError(problems)


def require_fleet(specs: SpecSet) -> Fleet:
    fleet = specs.fleet
    if fleet is None:
        files = sorted({d.file for d in specs.documents})
        raise SpecError([Problem("no Fleet document found; pass the Fleet spec too (-f fleet.yaml)",
                                 ", ".join(files) or None)])
    return fleet
