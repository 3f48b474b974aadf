"""cqlguard: a CQL-aware policy proxy for Cassandra's native protocol.

Owns the pure core: :mod:`.protocol` (sans-IO v4/v5 codec and connection state machine),
:mod:`.classify` (CQL lexer and statement classifier) and :mod:`.policy` (rules and
``decide``), :mod:`.guard` (one request in, one decision out) and :mod:`.session` (one
connection: bytes in from either side; bytes for each side, flow lines and counters out).
Nothing in these modules performs I/O. The asyncio pump that moves bytes between sockets
(:mod:`.pump`, driven by :mod:`.proxy`'s server) is a thin loop around the session.
"""

from isthmus.cqlguard.classify import Classified, Statement, Unclassifiable, classify
from isthmus.cqlguard.policy import Identity, Policy, PolicyDecision, PolicyError, PolicyVerdict
from isthmus.cqlguard.protocol import ConnectionConfig, CQLConnection, ProtocolError

__all__ = [
    "CQLConnection",
    "Classified",
    "ConnectionConfig",
    "Identity",
    "Policy",
    "PolicyDecision",
    "PolicyError",
    "PolicyVerdict",
    "ProtocolError",
    "Statement",
    "Unclassifiable",
    "classify",
]
