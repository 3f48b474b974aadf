"""The Isthmus image, by digest: what the operator's Deployment and the cqlguard sidecar run. Pure.

One image runs both (``isthmus operator run`` and ``isthmus guard run``); ``make image`` builds it
(``scripts/image/build.sh``) and prints its digest. Kubernetes objects that Isthmus renders name it
as ``repository@sha256:<digest>``, never by a tag, so what runs is exactly what was built and
scanned. :data:`RELEASED` is the image published for this version: a release records the digest
``make image`` printed for it here (the image cannot carry its own digest, so the copy inside an
image names the previous release's).

Must not: do I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["RELEASED", "REPOSITORY", "ImageRef"]

REPOSITORY: Final = "ghcr.io/isthmus-dev/isthmus"
_RELEASED_DIGEST: Final = "sha256:cb05b84ebe35a8a350a2819492479b41a6a5f0729518f50addd8aed1b6c3adcc"

# A reference name (registry/path, lower case, as the distribution spec allows) and a sha256 digest.
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+$"
                         r"|^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageRef:
    """``repository@sha256:...``; ``str`` and :meth:`parse` round-trip."""

    repository: str
    digest: str

    def __post_init__(self) -> None:
        if not _REPOSITORY.match(self.repository):
            raise ValueError(f"{self.repository!r} is not an image repository (lower case, like {REPOSITORY})")
        if not _DIGEST.match(self.digest):
            raise ValueError(f"{self.digest!r} is not an image digest: want sha256: and 64 hex digits "
                             "(`make image` prints it)")

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """``repo@sha256:<64 hex>``; a tag (``repo:1.0``) is refused: images are named by digest."""
        repository, at, digest = text.strip().partition("@")
        if not at:
            raise ValueError(f"image {text!r} has no digest: name it as {REPOSITORY}@sha256:<digest> "
                             "(`make image` prints the digest), not by a tag")
        return cls(repository, digest)

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}"


RELEASED: Final = ImageRef(REPOSITORY, _RELEASED_DIGEST)
