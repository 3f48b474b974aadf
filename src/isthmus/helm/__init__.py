"""Running the real ``helm``: finding the binary, checking its version, ``helm template`` per cluster.

Owns: the ``helm`` subprocess (the only one Isthmus starts outside the lab) and translating its
failures into :class:`HelmError` (chart, cluster and Helm's own words; a UserError, exit code 2).
Must not: talk to an API server (the cluster's capabilities come in as arguments, from
``isthmus.kube.capabilities``) or post-process what Helm renders (that is ``isthmus.render.charts``,
which is pure).
"""

from .running import (
    HELM_ENV,
    MIN_VERSION,
    HelmBinary,
    HelmError,
    HelmMissing,
    TemplateRequest,
    chart_problem,
    find_helm,
    parse_version,
    template,
)

__all__ = [
    "HELM_ENV",
    "MIN_VERSION",
    "HelmBinary",
    "HelmError",
    "HelmMissing",
    "TemplateRequest",
    "chart_problem",
    "find_helm",
    "parse_version",
    "template",
]
