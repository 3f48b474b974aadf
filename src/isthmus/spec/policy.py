"""The access-policy document: who may run which CQL actions on which tables.

This is the language of ``spec.access`` in a CassandraCluster and of the guard's policy file;
:mod:`isthmus.cqlguard.policy` decides statements against it (see its docstring for the
semantics). Here: the action vocabulary and the validated document, nothing that decides.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ACTION_GROUPS",
    "GLOBAL_ACTIONS",
    "KEYSPACE_ACTIONS",
    "Allowance",
    "CqlAction",
    "IdentitySelector",
    "PolicyDocument",
    "Rule",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_PATTERN_PART = re.compile(r"[A-Za-z0-9_*?]+")


class CqlAction(StrEnum):
    SELECT = "select"
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    TRUNCATE = "truncate"
    USE = "use"
    CREATE_KEYSPACE = "create_keyspace"
    ALTER_KEYSPACE = "alter_keyspace"
    DROP_KEYSPACE = "drop_keyspace"
    CREATE_TABLE = "create_table"
    ALTER_TABLE = "alter_table"
    DROP_TABLE = "drop_table"
    CREATE_INDEX = "create_index"
    DROP_INDEX = "drop_index"
    CREATE_MATERIALIZED_VIEW = "create_materialized_view"
    ALTER_MATERIALIZED_VIEW = "alter_materialized_view"
    DROP_MATERIALIZED_VIEW = "drop_materialized_view"
    CREATE_TYPE = "create_type"
    ALTER_TYPE = "alter_type"
    DROP_TYPE = "drop_type"
    CREATE_FUNCTION = "create_function"
    DROP_FUNCTION = "drop_function"
    CREATE_AGGREGATE = "create_aggregate"
    DROP_AGGREGATE = "drop_aggregate"
    CREATE_TRIGGER = "create_trigger"
    DROP_TRIGGER = "drop_trigger"
    CREATE_ROLE = "create_role"
    ALTER_ROLE = "alter_role"
    DROP_ROLE = "drop_role"
    CREATE_USER = "create_user"
    ALTER_USER = "alter_user"
    DROP_USER = "drop_user"
    CREATE_IDENTITY = "create_identity"
    DROP_IDENTITY = "drop_identity"
    GRANT = "grant"
    REVOKE = "revoke"
    LIST_ROLES = "list_roles"
    LIST_USERS = "list_users"
    LIST_PERMISSIONS = "list_permissions"
    DESCRIBE = "describe"


#: Actions with no keyspace/table target (role, permission and introspection statements).
GLOBAL_ACTIONS = frozenset(
    {
        CqlAction.CREATE_ROLE,
        CqlAction.ALTER_ROLE,
        CqlAction.DROP_ROLE,
        CqlAction.CREATE_USER,
        CqlAction.ALTER_USER,
        CqlAction.DROP_USER,
        CqlAction.CREATE_IDENTITY,
        CqlAction.DROP_IDENTITY,
        CqlAction.GRANT,
        CqlAction.REVOKE,
        CqlAction.LIST_ROLES,
        CqlAction.LIST_USERS,
        CqlAction.LIST_PERMISSIONS,
        CqlAction.DESCRIBE,
    }
)
#: Actions whose target is a keyspace (``table`` is None).
KEYSPACE_ACTIONS = frozenset({
    CqlAction.USE, CqlAction.CREATE_KEYSPACE, CqlAction.ALTER_KEYSPACE, CqlAction.DROP_KEYSPACE,
})

#: Shorthands accepted in ``actions``.
ACTION_GROUPS: Mapping[str, frozenset[CqlAction]] = {
    "read": frozenset({CqlAction.SELECT}),
    "write": frozenset({CqlAction.INSERT, CqlAction.UPDATE, CqlAction.DELETE}),
    "schema": frozenset(
        a
        for a in CqlAction
        if a.value.startswith(("create_", "alter_", "drop_"))
        and a not in GLOBAL_ACTIONS
        and not a.value.endswith("_keyspace")
    ),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentitySelector(_Model):
    cidrs: tuple[IPNetwork, ...] = ()
    users: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not (self.cidrs or self.users or self.principals):
            raise ValueError("give at least one of cidrs, users, principals (use 0.0.0.0/0 and ::/0 for anyone)")
        return self


class Allowance(_Model):
    actions: tuple[str, ...] = Field(min_length=1)
    tables: tuple[str, ...] = ()

    @field_validator("actions")
    @classmethod
    def _known_actions(cls, actions: tuple[str, ...]) -> tuple[str, ...]:
        known = {a.value for a in CqlAction} | set(ACTION_GROUPS)
        unknown = [a for a in actions if a not in known]
        if unknown:
            raise ValueError(f"unknown action(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return actions

    @field_validator("tables")
    @classmethod
    def _patterns(cls, tables: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in tables:
            parts = pattern.split(".")
            if len(parts) != 2 or not all(_PATTERN_PART.fullmatch(p) for p in parts):
                raise ValueError(f"table pattern {pattern!r} must be 'keyspace.table' (letters, digits, _, * and ?)")
        return tables

    @model_validator(mode="after")
    def _tables_for_data_actions(self) -> Self:
        if not self.tables and any(a not in GLOBAL_ACTIONS for a in self.expanded()):
            raise ValueError("tables is required unless every action is global (roles, permissions, describe)")
        return self

    def expanded(self) -> frozenset[CqlAction]:
        out: set[CqlAction] = set()
        for name in self.actions:
            out |= ACTION_GROUPS[name] if name in ACTION_GROUPS else {CqlAction(name)}
        return frozenset(out)

    def patterns(self) -> tuple[tuple[str, str], ...]:
        return tuple((p.split(".")[0], p.split(".")[1]) for p in self.tables)


class Rule(_Model):
    name: str = Field(min_length=1)
    identities: IdentitySelector
    allow: tuple[Allowance, ...] = Field(min_length=1)


class PolicyDocument(_Model):
    rules: tuple[Rule, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"duplicate rule name {rule.name!r}")
            seen.add(rule.name)
        return self
