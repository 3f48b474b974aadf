"""CQL statement classification: a real lexer and a classifier into (action, keyspace, table).

Owns: tokenising CQL the way Cassandra does and telling a policy what a query string does.
Must not: touch the network, the protocol codec or policy decisions (see ``policy.py``).
"""

from isthmus.cqlguard.classify.classifier import (
    GLOBAL_ACTIONS,
    KEYSPACE_ACTIONS,
    Classification,
    Classified,
    CqlAction,
    Statement,
    Unclassifiable,
    classify,
    merge,
)
from isthmus.cqlguard.classify.lexer import LexError, Token, TokenKind, tokenize

__all__ = [
    "GLOBAL_ACTIONS",
    "KEYSPACE_ACTIONS",
    "Classification",
    "Classified",
    "CqlAction",
    "LexError",
    "Statement",
    "Token",
    "TokenKind",
    "Unclassifiable",
    "classify",
    "merge",
    "tokenize",
]
