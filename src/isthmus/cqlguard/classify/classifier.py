"""Classify one CQL query string into the (action, keyspace, table) triples a policy checks.

The classifier reads only as far as it needs to find *what* is done *where*; it does not
validate the rest of the statement (Cassandra does). It is built so that it cannot be
fooled into under-reporting: it works on tokens (so comments and string literals cannot
hide or fake keywords), refuses several statements in one string, splits BATCH bodies at
every statement keyword (semicolons between batch children are optional in CQL), and returns
:class:`Unclassifiable` for anything it does not recognise — which the policy denies.

Names: unquoted identifiers are lower-cased, quoted ones keep their case (Cassandra's rule).
An unqualified table resolves against ``keyspace`` (the v5 per-request keyspace, else the
connection keyspace); with no keyspace it stays ``None``, which no policy pattern matches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from isthmus.cqlguard.classify.lexer import LexError, Token, TokenKind, tokenize
from isthmus.spec.policy import GLOBAL_ACTIONS, KEYSPACE_ACTIONS, CqlAction

__all__ = [
    "GLOBAL_ACTIONS",
    "KEYSPACE_ACTIONS",
    "Classification",
    "Classified",
    "CqlAction",
    "Statement",
    "Unclassifiable",
    "classify",
    "merge",
]



_BATCH_CHILD_ACTIONS = frozenset({CqlAction.INSERT, CqlAction.UPDATE, CqlAction.DELETE})

#: Cassandra's reserved keywords (``ReservedKeywords.java``): never a bare name.
_RESERVED = frozenset(
    {
        "add",
        "allow",
        "alter",
        "and",
        "apply",
        "asc",
        "authorize",
        "batch",
        "begin",
        "by",
        "columnfamily",
        "create",
        "delete",
        "desc",
        "describe",
        "drop",
        "entries",
        "execute",
        "from",
        "full",
        "grant",
        "if",
        "in",
        "index",
        "infinity",
        "insert",
        "into",
        "is",
        "keyspace",
        "limit",
        "materialized",
        "modify",
        "nan",
        "norecursive",
        "not",
        "null",
        "of",
        "on",
        "or",
        "order",
        "primary",
        "rename",
        "replace",
        "revoke",
        "schema",
        "select",
        "set",
        "table",
        "to",
        "token",
        "truncate",
        "unlogged",
        "update",
        "use",
        "using",
        "view",
        "where",
        "with",
    }
)


#: Words that Lexer.g lexes as literals before IDENT (``BOOLEAN: T R U E | F A L S E``): never a name.
_LITERAL_WORDS = frozenset({"true", "false"})


@dataclass(frozen=True, slots=True)
class Statement:
    """One thing a query does: ``action`` on ``keyspace``.``table`` (either may be None)."""

    action: CqlAction
    keyspace: str | None
    table: str | None

    def __str__(self) -> str:
        if self.action in GLOBAL_ACTIONS:
            return str(self.action)
        return f"{self.action} on {self.keyspace or '<no keyspace>'}{'.' + self.table if self.table else ''}"


@dataclass(frozen=True, slots=True)
class Classified:
    """What a query (or a protocol BATCH) does; ``batch`` marks a BATCH."""

    statements: tuple[Statement, ...]
    batch: bool = False


@dataclass(frozen=True, slots=True)
class Unclassifiable:
    """The classifier could not tell what the query does; policies deny these."""

    reason: str


Classification = Classified | Unclassifiable


class _Fail(Exception):
    pass


class _Parser:
    def __init__(self, tokens: list[Token], keyspace: str | None) -> None:
        self._tokens = tokens
        self._pos = 0
        self._keyspace = keyspace

    def peek(self, offset: int = 0) -> Token | None:
        i = self._pos + offset
        return self._tokens[i] if i < len(self._tokens) else None

    def next(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise _Fail("unexpected end of statement")
        self._pos += 1
        return tok

    def at_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.is_word(*words)

    def accept(self, *words: str) -> bool:
        if self.at_word(*words):
            self._pos += 1
            return True
        return False

    def accept_seq(self, *words: str) -> bool:
        for i, word in enumerate(words):
            tok = self.peek(i)
            if tok is None or not tok.is_word(word):
                return False
        self._pos += len(words)
        return True

    def expect(self, *words: str) -> str:
        tok = self.next()
        if not tok.is_word(*words):
            raise _Fail(f"expected {' or '.join(w.upper() for w in words)}, found {tok.value!r}")
        return tok.value

    def name(self) -> str:
        tok = self.next()
        if tok.kind is TokenKind.QUOTED_IDENT:
            return tok.value
        if tok.kind is TokenKind.IDENT and tok.value not in _RESERVED and tok.value not in _LITERAL_WORDS:
            return tok.value
        raise _Fail(f"expected a name, found {tok.value!r}")

    def qualified(self) -> tuple[str | None, str]:
        first = self.name()
        tok = self.peek()
        if tok is not None and tok.is_punct("."):
            self._pos += 1
            return first, self.name()
        return self._keyspace, first

    def skip_to_word(self, word: str) -> None:
        """Advance past the first ``word`` outside any brackets."""
        depth = 0
        while (tok := self.peek()) is not None:
            self._pos += 1
            if tok.is_punct("(", "[", "{"):
                depth += 1
            elif tok.is_punct(")", "]", "}"):
                depth -= 1
            elif depth == 0 and tok.is_word(word):
                return
        raise _Fail(f"no {word.upper()} clause")

    def if_not_exists(self) -> None:
        self.accept_seq("if", "not", "exists")

    def if_exists(self) -> None:
        self.accept_seq("if", "exists")


def classify(query: str, *, keyspace: str | None = None) -> Classification:
    """Classify one query string. See the module docstring."""
    try:
        tokens = tokenize(query)
    except LexError as exc:
        return Unclassifiable(f"not lexically valid CQL: {exc}")
    while tokens and tokens[-1].is_punct(";"):
        tokens.pop()
    if not tokens:
        return Unclassifiable("empty statement")
    try:
        if tokens[0].is_word("begin"):
            return Classified(_batch(tokens, keyspace), batch=True)
        if any(tok.is_punct(";") for tok in tokens):
            return Unclassifiable("several statements in one query string")
        return Classified(_statement(_Parser(tokens, keyspace)))
    except _Fail as exc:
        return Unclassifiable(str(exc))


def merge(parts: Iterable[Classification]) -> Classification:
    """Combine the children of a protocol BATCH; any unclassifiable child taints the whole."""
    statements: list[Statement] = []
    for part in parts:
        if isinstance(part, Unclassifiable):
            return part
        statements.extend(part.statements)
    if not statements:
        return Unclassifiable("empty batch")
    return Classified(tuple(statements), batch=True)


def _batch(tokens: list[Token], keyspace: str | None) -> tuple[Statement, ...]:
    p = _Parser(tokens, keyspace)
    p.expect("begin")
    p.accept("unlogged", "counter")
    p.expect("batch")
    if p.accept("using"):
        p.expect("timestamp")
        p.next()
    if len(tokens) < 2 or not (tokens[-2].is_word("apply") and tokens[-1].is_word("batch")):
        raise _Fail("BATCH does not end with APPLY BATCH")
    body = tokens[p._pos : len(tokens) - 2]
    # Split at ';' and before every statement keyword (both separators are optional in CQL).
    children: list[list[Token]] = []
    for tok in body:
        if tok.is_punct(";"):
            children.append([])
            continue
        if tok.is_word("insert", "update", "delete", "begin", "apply") or not children:
            children.append([])
        children[-1].append(tok)
    statements: list[Statement] = []
    for child in children:
        if not child:
            continue
        found = _statement(_Parser(child, keyspace))
        if any(s.action not in _BATCH_CHILD_ACTIONS for s in found):
            raise _Fail("only INSERT, UPDATE and DELETE are allowed inside a BATCH")
        statements.extend(found)
    if not statements:
        raise _Fail("empty batch")
    return tuple(statements)


def _statement(p: _Parser) -> tuple[Statement, ...]:
    word = p.next()
    if word.kind is not TokenKind.IDENT:
        raise _Fail(f"a statement cannot start with {word.value!r}")
    match word.value:
        case "select":
            p.skip_to_word("from")
            return (Statement(CqlAction.SELECT, *p.qualified()),)
        case "insert":
            p.expect("into")
            return (Statement(CqlAction.INSERT, *p.qualified()),)
        case "update":
            return (Statement(CqlAction.UPDATE, *p.qualified()),)
        case "delete":
            p.skip_to_word("from")
            return (Statement(CqlAction.DELETE, *p.qualified()),)
        case "truncate":
            p.accept("table", "columnfamily")
            return (Statement(CqlAction.TRUNCATE, *p.qualified()),)
        case "use":
            return (Statement(CqlAction.USE, p.name(), None),)
        case "create":
            return _create(p)
        case "alter":
            return _alter(p)
        case "drop":
            return _drop(p)
        case "grant":
            return (Statement(CqlAction.GRANT, None, None),)
        case "revoke":
            return (Statement(CqlAction.REVOKE, None, None),)
        case "list":
            return (_list(p),)
        case "describe" | "desc":
            return (Statement(CqlAction.DESCRIBE, None, None),)
    raise _Fail(f"unknown statement {word.value.upper()}")


def _create(p: _Parser) -> tuple[Statement, ...]:
    p.accept_seq("or", "replace")
    kind = p.next()
    if not kind.is_word(
        "keyspace",
        "schema",
        "table",
        "columnfamily",
        "custom",
        "index",
        "materialized",
        "type",
        "function",
        "aggregate",
        "trigger",
        "role",
        "user",
        "identity",
    ):
        raise _Fail(f"unknown CREATE {kind.value.upper()}")
    match kind.value:
        case "keyspace" | "schema":
            p.if_not_exists()
            return (Statement(CqlAction.CREATE_KEYSPACE, p.name(), None),)
        case "table" | "columnfamily":
            p.if_not_exists()
            return (Statement(CqlAction.CREATE_TABLE, *p.qualified()),)
        case "custom" | "index":
            if kind.value == "custom":
                p.expect("index")
            p.if_not_exists()
            if not p.at_word("on"):
                p.name()
            p.expect("on")
            return (Statement(CqlAction.CREATE_INDEX, *p.qualified()),)
        case "materialized":
            p.expect("view")
            p.if_not_exists()
            view = Statement(CqlAction.CREATE_MATERIALIZED_VIEW, *p.qualified())
            p.expect("as")
            p.expect("select")
            p.skip_to_word("from")
            return (view, Statement(CqlAction.SELECT, *p.qualified()))
        case "type":
            p.if_not_exists()
            return (Statement(CqlAction.CREATE_TYPE, *p.qualified()),)
        case "function":
            p.if_not_exists()
            return (Statement(CqlAction.CREATE_FUNCTION, *p.qualified()),)
        case "aggregate":
            p.if_not_exists()
            return (Statement(CqlAction.CREATE_AGGREGATE, *p.qualified()),)
        case "trigger":
            p.if_not_exists()
            p.name()
            p.expect("on")
            return (Statement(CqlAction.CREATE_TRIGGER, *p.qualified()),)
        case "role":
            return (Statement(CqlAction.CREATE_ROLE, None, None),)
        case "user":
            return (Statement(CqlAction.CREATE_USER, None, None),)
    return (Statement(CqlAction.CREATE_IDENTITY, None, None),)


def _alter(p: _Parser) -> tuple[Statement, ...]:
    kind = p.next()
    match kind.value if kind.kind is TokenKind.IDENT else "":
        case "keyspace" | "schema":
            p.if_exists()
            return (Statement(CqlAction.ALTER_KEYSPACE, p.name(), None),)
        case "table" | "columnfamily":
            p.if_exists()
            return (Statement(CqlAction.ALTER_TABLE, *p.qualified()),)
        case "materialized":
            p.expect("view")
            p.if_exists()
            return (Statement(CqlAction.ALTER_MATERIALIZED_VIEW, *p.qualified()),)
        case "type":
            p.if_exists()
            return (Statement(CqlAction.ALTER_TYPE, *p.qualified()),)
        case "role":
            return (Statement(CqlAction.ALTER_ROLE, None, None),)
        case "user":
            return (Statement(CqlAction.ALTER_USER, None, None),)
    raise _Fail(f"unknown ALTER {kind.value.upper()}")


def _drop(p: _Parser) -> tuple[Statement, ...]:
    kind = p.next()
    match kind.value if kind.kind is TokenKind.IDENT else "":
        case "keyspace" | "schema":
            p.if_exists()
            return (Statement(CqlAction.DROP_KEYSPACE, p.name(), None),)
        case "table" | "columnfamily":
            p.if_exists()
            return (Statement(CqlAction.DROP_TABLE, *p.qualified()),)
        case "index":
            p.if_exists()
            return (Statement(CqlAction.DROP_INDEX, *p.qualified()),)
        case "materialized":
            p.expect("view")
            p.if_exists()
            return (Statement(CqlAction.DROP_MATERIALIZED_VIEW, *p.qualified()),)
        case "type":
            p.if_exists()
            return (Statement(CqlAction.DROP_TYPE, *p.qualified()),)
        case "function":
            p.if_exists()
            return (Statement(CqlAction.DROP_FUNCTION, *p.qualified()),)
        case "aggregate":
            p.if_exists()
            return (Statement(CqlAction.DROP_AGGREGATE, *p.qualified()),)
        case "trigger":
            p.if_exists()
            p.name()
            p.expect("on")
            return (Statement(CqlAction.DROP_TRIGGER, *p.qualified()),)
        case "role":
            return (Statement(CqlAction.DROP_ROLE, None, None),)
        case "user":
            return (Statement(CqlAction.DROP_USER, None, None),)
        case "identity":
            return (Statement(CqlAction.DROP_IDENTITY, None, None),)
    raise _Fail(f"unknown DROP {kind.value.upper()}")


def _list(p: _Parser) -> Statement:
    if p.accept("roles"):
        return Statement(CqlAction.LIST_ROLES, None, None)
    if p.accept("users", "superusers"):
        return Statement(CqlAction.LIST_USERS, None, None)
    return Statement(CqlAction.LIST_PERMISSIONS, None, None)
