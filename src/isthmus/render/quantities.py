"""Kubernetes resource quantities turned into the numbers the JVM settings need.

Only the suffixes the spec accepts are handled (``spec.cassandra._QUANTITY``): the binary
``Ki Mi Gi Ti``, the decimal ``k M G T`` and the milli ``m``. The JVM's ``M``/``G`` mean MiB/GiB.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

from .errors import RenderError

__all__ = ["HeapSettings", "cpu_cores", "heap_settings", "quantity"]

_SUFFIX = {
    "": Fraction(1), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")
_JVM_SIZE = re.compile(r"^([0-9]+)([MG])$")
_MIB = 2**20

# cassandra-env.sh's own default for the young generation: 100 MiB per core, at most a quarter of the heap.
NEW_GEN_MIB_PER_CORE = 100


def quantity(text: str) -> Fraction:
    """A quantity's exact value in base units (bytes, cores)."""
    match = _QUANTITY.match(text)
    if not match:
        raise RenderError(f"{text!r} is not a Kubernetes quantity like 4Gi or 500m")
    return Fraction(match.group(1)) * _SUFFIX[match.group(2) or ""]


def cpu_cores(text: str) -> Fraction:
    return quantity(text)


@dataclass(frozen=True)
class HeapSettings:
    """``MAX_HEAP_SIZE`` and ``HEAP_NEWSIZE`` for cassandra-env.sh, which wants both or neither."""

    max_heap_mib: int
    new_size_mib: int

    @property
    def max_heap(self) -> str:
        return f"{self.max_heap_mib}M"

    @property
    def new_size(self) -> str:
        return f"{self.new_size_mib}M"


def heap_settings(*, memory: str, cpu: str, heap: str | None) -> HeapSettings:
    """The heap asked for, or a quarter of the container's memory; the young generation per core."""
    memory_mib = quantity(memory) / _MIB
    if heap is None:
        heap_mib = math.floor(memory_mib / 4)
    else:
        match = _JVM_SIZE.match(heap)
        if not match:
            raise RenderError(f"heap {heap!r} must look like 2048M or 2G")
        heap_mib = int(match.group(1)) * (1024 if match.group(2) == "G" else 1)
    if heap_mib < 1:
        raise RenderError(f"memory {memory!r} is too small for a JVM heap; give Cassandra at least 1Gi")
    if heap_mib >= memory_mib:
        raise RenderError(
            f"heap {heap} does not fit in memory {memory}: the container would be OOM-killed; "
            "set spec.resources.heap to at most half of spec.resources.memory"
        )
    cores = max(Fraction(1), cpu_cores(cpu))
    new_mib = max(1, min(math.floor(NEW_GEN_MIB_PER_CORE * cores), heap_mib // 4))
    return HeapSettings(max_heap_mib=heap_mib, new_size_mib=new_mib)
