"""The MCS API's CRDs in every lab cluster, as a real MCS-capable cluster has them.

Owns: installing ``ServiceExport`` and ``ServiceImport`` (``multicluster.x-k8s.io/v1alpha1``, from
``templates/mcs-crds.yaml``) and saying when both are Established. Must not: implement MCS
(nothing here imports or exports a Service; the lab's DNS decides what ``clusterset.local``
answers).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

from .apiclient import LabApi

__all__ = ["MCS_CRD_NAMES", "ensure_mcs_crds", "mcs_crds"]

_CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@cache
def _text() -> str:
    return resources.files("isthmus.lab").joinpath("templates/mcs-crds.yaml").read_text()


def mcs_crds() -> list[dict[str, Any]]:
    """The two CustomResourceDefinitions, as JSON-able dicts (a fresh copy each call)."""
    return [doc for doc in yaml.safe_load_all(_text()) if doc]


MCS_CRD_NAMES = tuple(str(crd["metadata"]["name"]) for crd in mcs_crds())


def _established(crd: dict[str, Any]) -> bool:
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (crd.get("status") or {}).get("conditions") or [])


def ensure_mcs_crds(api: LabApi) -> bool:
    """Create whichever MCS CRD is missing; True once both are Established (call until it is)."""
    ready = True
    for crd in mcs_crds():
        path = f"{_CRDS}/{crd['metadata']['name']}"
        if api.status(path) == 404:
            api.create(_CRDS, crd)
            ready = False
        elif not _established(api.get(path)):
            ready = False
    return ready
