"""cqlguard: a CQL-aware policy proxy for Cassandra's native protocol.

Owns the pure core: :mod:`.protocol` (sans-IO v4/v5 codec and connection state machine),
:mod:`.classify` (CQL lexer and statement classifier) and :mod:`.policy` (rules and
``decide``). The asyncio pump that moves bytes between sockets is a thin loop around
:class:`~isthmus.cqlguard.protocol.CQLConnection` and lives elsewhere; nothing in these
modules performs I/O.
"""

from isthmus.cqlguard.classify import Classified, Statement, Unclassifiable, classify
from isthmus.cqlguard.policy import Decision, Identity, Policy, PolicyError, Verdict
from isthmus.cqlguard.protocol import ConnectionConfig, CQLConnection, ProtocolError

__all__ = [
    "CQLConnection",
    "Classified",
    "ConnectionConfig",
    "Decision",
    "Identity",
    "Policy",
    "PolicyError",
    "ProtocolError",
    "Statement",
    "Unclassifiable",
    "Verdict",
    "classify",
]
