"""The database's own view of itself: what ``nodetool`` says on each node, and whether that allows a disruption.

Owns: parsing ``nodetool status``, ``describecluster``, ``netstats`` and ``compactionstats`` (as Cassandra
4.x and 5.0 print them) into :class:`NodeReport`, and :func:`judge`, the database gate's rule:

- every node of every *reachable* datacenter is UN in the view of every node asked (a node DN in DC B
  blocks a restart in DC A even when every pod is Ready); nodes of a datacenter whose cluster does not
  answer are left out (that region is Unknown, and must not stall the others);
- the schema agrees: one version among the reachable datacenters' nodes;
- nothing streams, joins, leaves, moves, rebuilds or repairs anywhere that answers (a node not in mode
  NORMAL, a stream session, a Validation compaction).

Must not: do I/O (``isthmus.rollout.dbgate`` asks the nodes through ``pods/exec``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .keyspaceplan import LiveReplication, parse_replication

__all__ = [
    "NODETOOL_SCRIPT",
    "NodeReport",
    "RingNode",
    "RingVerdict",
    "judge",
    "parse_compactionstats",
    "parse_describecluster",
    "parse_netstats",
    "parse_report",
    "parse_status",
]

#: The sections one exec prints, in order, each after a marker line (one exec per node, not four).
_SECTIONS = ("status", "describecluster", "netstats", "compactionstats")
_MARK = "=== isthmus: "
NODETOOL_SCRIPT = "; ".join(f"echo '{_MARK}{s}'; nodetool {s}" for s in _SECTIONS)

_STATUS_LINE = re.compile(
    r"^(?P<status>[UD])(?P<state>[NLJM])\s+(?P<address>\S+)\s+(?P<load>\?|[\d.]+\s*\S*?B)\s+(?P<tokens>\d+)\s+"
    r"(?P<owns>\?|[\d.]+%)\s+(?P<host>[0-9a-f-]{36})\s+(?P<rack>\S+)\s*$")
_STATE_NAMES = {"N": "Normal", "L": "Leaving", "J": "Joining", "M": "Moving"}


@dataclass(frozen=True, slots=True)
class RingNode:
    """One line of ``nodetool status``: how one node sees another."""

    datacenter: str
    address: str
    status: str  # U or D
    state: str  # N, L, J or M
    load: str
    owns: str
    host_id: str
    rack: str

    @property
    def code(self) -> str:
        """``UN``, ``DN``, ``UJ``, ``UL``...: what ``nodetool status`` prints."""
        return self.status + self.state

    @property
    def normal(self) -> bool:
        return self.code == "UN"


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What one node said (or why it said nothing)."""

    cluster: str
    pod: str
    datacenter: str
    address: str
    ring: tuple[RingNode, ...] = ()
    schema: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Schema version -> addresses (``UNREACHABLE`` is a version of its own, as nodetool prints it)."""
    mode: str = ""
    streams: tuple[str, ...] = ()
    validations: tuple[str, ...] = ()
    error: str = ""
    keyspaces: Mapping[str, LiveReplication] = field(default_factory=dict)
    """Every keyspace's replication, from ``describecluster`` (:func:`.keyspaceplan.parse_replication`)."""

    @property
    def answered(self) -> bool:
        return not self.error


@dataclass(frozen=True, slots=True)
class RingVerdict:
    ok: bool
    reasons: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "every node UN, one schema, nothing streaming"


def parse_status(text: str) -> list[RingNode]:
    """``nodetool status`` -> its nodes, with their datacenter."""
    out: list[RingNode] = []
    dc = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Datacenter: "):
            dc = line.removeprefix("Datacenter: ").strip()
            continue
        if (m := _STATUS_LINE.match(line)) is not None:
            out.append(RingNode(dc, m["address"], m["status"], m["state"], re.sub(r"\s+", " ", m["load"]),
                                m["owns"], m["host"], m["rack"]))
    return out


def parse_describecluster(text: str) -> dict[str, tuple[str, ...]]:
    """The ``Schema versions:`` block of ``nodetool describecluster``: version -> addresses."""
    versions: dict[str, tuple[str, ...]] = {}
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Schema versions:"):
            inside = True
            continue
        if inside:
            m = re.match(r"^(\S+): \[(.*)\]$", line)
            if m is None:
                if line:
                    break
                continue
            versions[m[1]] = tuple(a.strip().split(":")[0] for a in m[2].split(",") if a.strip())
    return versions


def parse_netstats(text: str) -> tuple[str, tuple[str, ...]]:
    """``(mode, stream sessions)`` from ``nodetool netstats``: mode NORMAL and no sessions means quiet."""
    mode = ""
    sessions: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Mode: "):
            mode = line.removeprefix("Mode: ").strip()
        elif re.match(r"^(Repair|Rebuild|Bootstrap|Unbootstrap|Relocation|Move|Restore replica count|"
                      r"Decommission|Bulk Load|Stream)\b.*[0-9a-f]{8}-[0-9a-f-]{27}", line, re.IGNORECASE):
            sessions.append(line)
    return mode, tuple(sessions)


def parse_compactionstats(text: str) -> tuple[str, ...]:
    """The Validation compactions (repairs) that ``nodetool compactionstats`` lists, as ``keyspace.table``.

    Its table is padded to the widest cell, with one space between columns (so "compaction type" and the
    next header can touch): rows are read as words, ``<id> Validation <keyspace> <table> ...``.
    """
    found: list[str] = []
    table = False
    for raw in text.splitlines():
        words = raw.split()
        if "compaction" in words and "type" in words:
            table = True
        elif table and len(words) >= 4 and words[1] == "Validation":
            found.append(f"{words[2]}.{words[3]}")
    return tuple(found)


def _sections(text: str) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith(_MARK):
            current = line.removeprefix(_MARK).strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def parse_report(cluster: str, pod: str, datacenter: str, address: str, output: str) -> NodeReport:
    """The output of :data:`NODETOOL_SCRIPT` on one node."""
    parts = _sections(output)
    missing = [s for s in _SECTIONS if s not in parts]
    if missing:
        return NodeReport(cluster, pod, datacenter, address, error=f"nodetool printed no {', '.join(missing)}")
    ring = tuple(parse_status(parts["status"]))
    if not ring:
        return NodeReport(cluster, pod, datacenter, address,
                          error=f"nodetool status listed no node: {parts['status'].strip()[-200:]}")
    mode, streams = parse_netstats(parts["netstats"])
    return NodeReport(cluster, pod, datacenter, address, ring, parse_describecluster(parts["describecluster"]),
                      mode, streams, parse_compactionstats(parts["compactionstats"]),
                      keyspaces=parse_replication(parts["describecluster"]))


def judge(reports: Sequence[NodeReport], *, unreachable_datacenters: Iterable[str] = (),
          tolerated: Iterable[str] = ()) -> RingVerdict:
    """May a disruptive step start, as far as the database can tell? (See the module docstring.)

    ``unreachable_datacenters``: datacenters whose cluster does not answer (their nodes are not judged);
    ``tolerated``: addresses of nodes allowed to be down (a rollback's racks not yet reverted).
    """
    gone = set(unreachable_datacenters)
    spared = set(tolerated)
    reasons: list[str] = []
    clusters: set[str] = set()

    def say(report: NodeReport, reason: str) -> None:
        reasons.append(reason)
        clusters.add(report.cluster)

    for report in reports:
        if not report.answered:
            say(report, f"{report.cluster}/{report.pod}: {report.error}")
            continue
        for node in report.ring:
            if node.datacenter in gone or node.address in spared or node.normal:
                continue
            say(report, f"{report.datacenter} ({report.pod}) sees {node.address} of {node.datacenter} rack "
                        f"{node.rack} {node.code} ({'Down' if node.status == 'D' else 'Up'}/"
                        f"{_STATE_NAMES.get(node.state, node.state)})")
        judged = {n.address for n in report.ring if n.datacenter not in gone and n.address not in spared}
        versions = sorted(v for v, addrs in report.schema.items() if v != "UNREACHABLE" and set(addrs) & judged)
        if len(versions) > 1:
            say(report, f"{report.datacenter} ({report.pod}): schema versions disagree ({', '.join(versions)})")
        if report.mode and report.mode.upper() != "NORMAL":
            say(report, f"{report.cluster}/{report.pod}: mode {report.mode}")
        for session in report.streams:
            say(report, f"{report.cluster}/{report.pod}: streaming ({session})")
        if report.validations:
            say(report, f"{report.cluster}/{report.pod}: repair running (validation of "
                        f"{', '.join(report.validations)})")
    unique = tuple(dict.fromkeys(reasons))
    return RingVerdict(not unique, unique, tuple(sorted(clusters)))
