"""Errors raised while rendering manifests.

    UserError
    └── RenderError     the spec is valid on its own but cannot become valid Kubernetes objects
                        (a name too long for a StatefulSet, a heap that does not fit in memory,
                        a datacenter mapped to a cluster the Fleet lacks, an app kind with no renderer)
"""

from __future__ import annotations

from ..errors import UserError

__all__ = ["RenderError"]


class RenderError(UserError):
    """The spec cannot be rendered; the message names the object and says how to fix it."""
