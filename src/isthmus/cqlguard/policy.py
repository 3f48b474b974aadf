"""Access policy for the CQL proxy: a validated rule document and one pure ``decide``.

Document (YAML or an equivalent dict)::

    rules:
      - name: sales-app
        identities:                       # every non-empty list must match (AND);
          cidrs: ["10.20.0.0/16"]         # within a list any entry matches (OR)
          users: ["sales_app"]            # SASL user confirmed by AUTH_SUCCESS
          principals: ["spiffe://prod/ns/sales/sa/app"]   # TLS client certificate (mTLS)
        allow:
          - actions: [select, insert, update, delete]   # or groups: read, write, schema
            tables: ["sales.orders", "sales.line_*"]

Semantics:

* Default deny. Unclassifiable statements are always denied.
* ``principals`` name verified TLS client certificates: an entry matches the certificate's
  SPIFFE ID (its ``spiffe://`` URI SAN) or its subject, written RFC 4514-style, most
  specific first (``CN=app,O=acme``).
* A table pattern is ``keyspace.table``; each side is matched separately, fnmatch-style
  but anchored, and ``*``/``?`` never match a dot (not even inside a quoted name). Names are
  compared as Cassandra stores them (unquoted names lower-case).
* Keyspace actions (``create_keyspace``, ``alter_keyspace``, ``drop_keyspace``) need a
  pattern ``<ks>.*``. ``use`` is allowed on a keyspace wherever any allowance of a matching
  rule covers some table of it (USE reveals nothing more than that).
* Global actions (roles, permissions, ``describe``) take no ``tables``.
* Built in: any identity may ``select`` the tables drivers read on connect:
  ``system.local``, ``system.peers``, ``system.peers_v2``, ``system_schema.*``,
  ``system_virtual_schema.*``.
* A BATCH is allowed only if every statement in it is.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from isthmus.cqlguard.classify import (
    GLOBAL_ACTIONS,
    Classification,
    Classified,
    CqlAction,
    Statement,
    Unclassifiable,
)
from isthmus.spec.policy import ACTION_GROUPS, Allowance, IdentitySelector, PolicyDocument, Rule

__all__ = [
    "ACTION_GROUPS",
    "BUILTIN_RULE",
    "Identity",
    "Policy",
    "PolicyDecision",
    "PolicyDocument",
    "PolicyError",
    "PolicyVerdict",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_KEYSPACE_LEVEL = frozenset({CqlAction.CREATE_KEYSPACE, CqlAction.ALTER_KEYSPACE, CqlAction.DROP_KEYSPACE})
BUILTIN_RULE = "builtin:driver-system-tables"
_BUILTIN_TABLES = (
    ("system", "local"),
    ("system", "peers"),
    ("system", "peers_v2"),
    ("system_schema", "*"),
    ("system_virtual_schema", "*"),
)


class PolicyError(ValueError):
    """The policy document is invalid; the message says where and why, one problem a line."""


class PolicyVerdict(Enum):
    ALLOWED = "allowed"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking: peer address, SASL user (after AUTH_SUCCESS), TLS client certificate.

    ``principal`` is the certificate's SPIFFE ID, else its subject; ``subject`` is its subject
    (both None without a verified certificate). A rule's ``principals`` may name either.
    """

    address: IPAddress | None = None
    user: str | None = None
    principal: str | None = None
    subject: str | None = None

    def __str__(self) -> str:
        parts = [f"user {self.user!r}" if self.user else "no user"]
        if self.principal:
            parts.append(f"principal {self.principal!r}")
        if self.subject and self.subject != self.principal:
            parts.append(f"subject {self.subject!r}")
        if self.address:
            parts.append(f"from {self.address}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    verdict: PolicyVerdict
    rule: str | None
    reason: str

    @property
    def allowed(self) -> bool:
        return self.verdict is PolicyVerdict.ALLOWED


# ---------------------------------------------------------------------------- decisions


def _identity_matches(selector: IdentitySelector, identity: Identity) -> bool:
    """Whether ``identity`` is one that ``selector`` names (every non-empty list matches; see the module doc)."""
    if selector.cidrs and (
        identity.address is None
        or not any(identity.address.version == net.version and identity.address in net for net in selector.cidrs)
    ):
        return False
    if selector.users and identity.user not in selector.users:
        return False
    return not (
        selector.principals
        and identity.principal not in selector.principals
        and (identity.subject is None or identity.subject not in selector.principals)
    )


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    """fnmatch-style, anchored, and ``*``/``?`` never match a dot."""
    body = "".join("[^.]*" if c == "*" else "[^.]" if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body)


def _match(name: str, pattern: str) -> bool:
    return _glob(pattern).fullmatch(name) is not None


def _allows(allowance: Allowance, statement: Statement) -> bool:
    action, ks, table = statement.action, statement.keyspace, statement.table
    if action is CqlAction.USE:
        return ks is not None and any(_match(ks, kp) for kp, _ in allowance.patterns())
    if action not in allowance.expanded():
        return False
    if action in GLOBAL_ACTIONS:
        return True
    if ks is None:
        return False
    if action in _KEYSPACE_LEVEL:
        return any(_match(ks, kp) and tp == "*" for kp, tp in allowance.patterns())
    if table is None:
        return False
    return any(_match(ks, kp) and _match(table, tp) for kp, tp in allowance.patterns())


def _builtin(statement: Statement) -> bool:
    return (
        statement.action is CqlAction.SELECT
        and statement.keyspace is not None
        and statement.table is not None
        and any(statement.keyspace == k and _match(statement.table, t) for k, t in _BUILTIN_TABLES)
    )


class Policy:
    """A validated policy; :meth:`decide` is pure and thread-safe."""

    def __init__(self, document: PolicyDocument) -> None:
        self.document = document

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<policy>") -> Policy:
        try:
            return cls(PolicyDocument.model_validate(data))
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "document"
                lines.append(f"{source}: {where}: {err['msg']}")
            raise PolicyError("\n".join(lines)) from exc

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<policy>") -> Policy:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
        return cls.from_dict(data if data is not None else {}, source=source)

    @classmethod
    def from_file(cls, path: Path) -> Policy:
        return cls.from_yaml(path.read_text(encoding="utf-8"), source=str(path))

    def decide(self, identity: Identity, classification: Classification) -> PolicyDecision:
        if isinstance(classification, Unclassifiable):
            return PolicyDecision(PolicyVerdict.DENIED, None, f"unclassifiable statement: {classification.reason}")
        if not classification.statements:
            return PolicyDecision(PolicyVerdict.DENIED, None, "no statement")
        rules = [r for r in self.document.rules if _identity_matches(r.identities, identity)]
        used: list[str] = []
        for statement in classification.statements:
            rule = self._rule_for(rules, statement)
            if rule is None:
                what = "batch statement " if isinstance(classification, Classified) and classification.batch else ""
                return PolicyDecision(PolicyVerdict.DENIED, None, f"no rule allows {what}{statement} for {identity}")
            if rule not in used:
                used.append(rule)
        names = ", ".join(used)
        return PolicyDecision(PolicyVerdict.ALLOWED, names, f"allowed by {names}")

    @staticmethod
    def _rule_for(rules: list[Rule], statement: Statement) -> str | None:
        if _builtin(statement):
            return BUILTIN_RULE
        for rule in rules:
            if any(_allows(a, statement) for a in rule.allow):
                return rule.name
        return None
