"""Which container images the lab runs for real, and what each one holds.

Owns: the rule that picks the pods the lab's pod runtime runs as real processes (a container whose image
is Cassandra: ``cassandra:<version>``, ``<registry>/.../cassandra:<tag>`` or ``...@sha256:...``), the
Cassandra version an image name stands for, and whether an image is Isthmus's own (the guard sidecar).
Must not: start anything; every function here is pure.

Every other pod stays simulated by kwok, which is told to leave these pods alone (see
:func:`isthmus.lab.components.kwok_config_yaml`).
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = ["REAL_IMAGE_PATTERN", "ImageKind", "cassandra_version", "image_kind", "runs_for_real"]

#: A regular expression (RE2 and Python alike) matching the image names the lab runs for real.
REAL_IMAGE_PATTERN = "(^|/)cassandra([:@]|$)"
_REAL = re.compile(REAL_IMAGE_PATTERN)
_ISTHMUS = re.compile(r"(^|/)isthmus([:@]|$)")
_TAG = re.compile(r":([0-9][0-9A-Za-z._-]*)$")


class ImageKind(StrEnum):
    CASSANDRA = "cassandra"
    ISTHMUS = "isthmus"
    #: not one the lab can run: a container of a real pod with such an image is reported running, with no process
    SIMULATED = "simulated"


def image_kind(image: str) -> ImageKind:
    if _REAL.search(image):
        return ImageKind.CASSANDRA
    if _ISTHMUS.search(image):
        return ImageKind.ISTHMUS
    return ImageKind.SIMULATED


def runs_for_real(container_images: list[str]) -> bool:
    """Whether a pod with these container images is the runtime's (kwok leaves it alone)."""
    return any(_REAL.search(i) for i in container_images)


def cassandra_version(image: str, *, default: str) -> str:
    """``cassandra:5.0.9`` -> ``5.0.9``; an image without a version tag (a digest, ``latest``) -> ``default``."""
    name = image.split("@", 1)[0]
    found = _TAG.search(name)
    return found.group(1) if found else default
