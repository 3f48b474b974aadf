"""Policy documents: validation errors, matching, default deny, builtins, batches."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from isthmus.cqlguard.classify import Classified, CqlAction, Statement, Unclassifiable, classify
from isthmus.cqlguard.policy import BUILTIN_RULE, Identity, Policy, PolicyError, PolicyVerdict

DOC = """
rules:
  - name: sales-app
    identities:
      cidrs: ["10.20.0.0/16"]
      users: [sales_app]
    allow:
      - actions: [select, write]
        tables: ["sales.orders", "sales.line_*"]
  - name: analytics
    identities:
      principals: ["spiffe://prod/ns/bi/sa/reader"]
    allow:
      - actions: [read]
        tables: ["sales.*", "crm.accounts"]
  - name: dba
    identities:
      users: [dba]
    allow:
      - actions: [schema, create_keyspace, drop_keyspace, truncate]
        tables: ["scratch.*"]
      - actions: [create_role, grant, list_roles]
"""

APP = Identity(address=ipaddress.ip_address("10.20.3.4"), user="sales_app")
APP_ELSEWHERE = Identity(address=ipaddress.ip_address("192.168.1.1"), user="sales_app")
BI = Identity(principal="spiffe://prod/ns/bi/sa/reader")
DBA = Identity(user="dba")
ANON = Identity()


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.from_yaml(DOC, source="test.yaml")


def verdict(policy: Policy, who: Identity, query: str, keyspace: str | None = None) -> PolicyVerdict:
    return policy.decide(who, classify(query, keyspace=keyspace)).verdict


ALLOWED, DENIED = PolicyVerdict.ALLOWED, PolicyVerdict.DENIED


@pytest.mark.parametrize(
    ("who", "query", "keyspace", "expected"),
    [
        (APP, "SELECT * FROM sales.orders", None, ALLOWED),
        (APP, "SELECT * FROM orders", "sales", ALLOWED),
        (APP, "SELECT * FROM orders", None, DENIED),  # no keyspace: matches nothing
        (APP, "INSERT INTO sales.line_items (k) VALUES (1)", None, ALLOWED),
        (APP, "DELETE FROM sales.line_items WHERE k = 1", None, ALLOWED),
        (APP, "TRUNCATE sales.orders", None, DENIED),
        (APP, "SELECT * FROM sales.customers", None, DENIED),
        (APP, 'SELECT * FROM sales."Orders"', None, DENIED),  # case matters once quoted
        (APP, "SELECT * FROM SALES.ORDERS", None, ALLOWED),  # unquoted folds to lower case
        (APP, "USE sales", None, ALLOWED),
        (APP, "USE crm", None, DENIED),
        (APP_ELSEWHERE, "SELECT * FROM sales.orders", None, DENIED),  # cidr AND user
        (BI, "SELECT * FROM sales.anything", None, ALLOWED),
        (BI, "SELECT * FROM crm.accounts", None, ALLOWED),
        (BI, "SELECT * FROM crm.accounts_secret", None, DENIED),  # anchored
        (BI, "UPDATE sales.orders SET a = 1 WHERE k = 1", None, DENIED),
        (DBA, "CREATE TABLE scratch.t (k int PRIMARY KEY)", None, ALLOWED),
        (DBA, "CREATE KEYSPACE scratch WITH replication = {}", None, ALLOWED),
        (DBA, "DROP KEYSPACE sales", None, DENIED),
        (DBA, "CREATE ROLE x", None, ALLOWED),
        (DBA, "DROP ROLE x", None, DENIED),
        (DBA, "SELECT * FROM scratch.t", None, DENIED),
        (ANON, "SELECT * FROM system.local", None, ALLOWED),
        (ANON, "SELECT peer, rpc_address FROM system.peers_v2", None, ALLOWED),
        (ANON, "SELECT * FROM system_schema.tables", None, ALLOWED),
        (ANON, "SELECT * FROM system_virtual_schema.keyspaces", None, ALLOWED),
        (ANON, "SELECT * FROM local", "system", ALLOWED),
        (ANON, "SELECT * FROM system.batches", None, DENIED),
        (ANON, "SELECT * FROM system_auth.roles", None, DENIED),
        (ANON, "DELETE FROM system.local WHERE key = 'local'", None, DENIED),
        (ANON, "SELECT * FROM system_schema_x.tables", None, DENIED),
        (APP, "SELECT * FROM sales.orders; DROP TABLE sales.orders", None, DENIED),
    ],
)
def test_decisions(policy: Policy, who: Identity, query: str, keyspace: str | None, expected: PolicyVerdict) -> None:
    assert verdict(policy, who, query, keyspace) is expected


def test_star_never_crosses_the_dot() -> None:
    p = Policy.from_dict(
        {
            "rules": [
                {"name": "r", "identities": {"users": ["u"]}, "allow": [{"actions": ["select"], "tables": ["s*.t"]}]}
            ]
        }
    )
    who = Identity(user="u")
    assert p.decide(who, Classified((Statement(CqlAction.SELECT, "sales", "t"),))).allowed
    assert not p.decide(who, Classified((Statement(CqlAction.SELECT, "sales.x", "t"),))).allowed
    assert not p.decide(who, Classified((Statement(CqlAction.SELECT, "sales", "t.x"),))).allowed


def test_decision_carries_rule_and_reason(policy: Policy) -> None:
    d = policy.decide(APP, classify("SELECT * FROM sales.orders"))
    assert (d.verdict, d.rule, d.reason) == (ALLOWED, "sales-app", "allowed by sales-app")
    d = policy.decide(ANON, classify("SELECT * FROM system.local"))
    assert d.rule == BUILTIN_RULE
    d = policy.decide(APP, classify("TRUNCATE sales.orders"))
    assert d.rule is None and "truncate on sales.orders" in d.reason and "sales_app" in d.reason
    d = policy.decide(APP, Unclassifiable("weird"))
    assert not d.allowed and "weird" in d.reason


def test_batch_needs_every_statement(policy: Policy) -> None:
    ok = "BEGIN BATCH INSERT INTO sales.orders (k) VALUES (1); DELETE FROM sales.line_x WHERE k = 1; APPLY BATCH"
    assert verdict(policy, APP, ok) is ALLOWED
    bad = "BEGIN BATCH INSERT INTO sales.orders (k) VALUES (1) DELETE FROM crm.accounts WHERE k = 1 APPLY BATCH"
    d = policy.decide(APP, classify(bad))
    assert not d.allowed and "crm.accounts" in d.reason


def test_v5_keyspace_flag_changes_resolution(policy: Policy) -> None:
    assert verdict(policy, APP, "SELECT * FROM orders", keyspace="sales") is ALLOWED
    assert verdict(policy, APP, "SELECT * FROM orders", keyspace="crm") is DENIED


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (
            {"rules": [{"name": "r", "identities": {}, "allow": [{"actions": ["select"], "tables": ["a.b"]}]}]},
            "at least one of",
        ),
        (
            {
                "rules": [
                    {"name": "r", "identities": {"users": ["u"]}, "allow": [{"actions": ["selct"], "tables": ["a.b"]}]}
                ]
            },
            "rules.0.allow.0.actions: Value error, unknown action(s) selct",
        ),
        (
            {
                "rules": [
                    {"name": "r", "identities": {"users": ["u"]}, "allow": [{"actions": ["select"], "tables": ["ab"]}]}
                ]
            },
            "must be 'keyspace.table'",
        ),
        (
            {
                "rules": [
                    {
                        "name": "r",
                        "identities": {"users": ["u"]},
                        "allow": [{"actions": ["select"], "tables": ["a.b.c"]}],
                    }
                ]
            },
            "must be 'keyspace.table'",
        ),
        (
            {"rules": [{"name": "r", "identities": {"users": ["u"]}, "allow": [{"actions": ["select"]}]}]},
            "tables is required",
        ),
        (
            {"rules": [{"name": "r", "identities": {"cidrs": ["10.0.0.300/8"]}, "allow": [{"actions": ["grant"]}]}]},
            "rules.0.identities.cidrs.0",
        ),
        (
            {"rules": [{"name": "r", "identities": {"users": ["u"]}, "allow": [{"actions": ["grant"]}], "deny": []}]},
            "rules.0.deny: Extra inputs are not permitted",
        ),
        (
            {"rules": [{"name": "r", "identities": {"users": ["u"]}, "allow": [{"actions": ["grant"]}]}] * 2},
            "duplicate rule name 'r'",
        ),
    ],
)
def test_validation_errors(doc: object, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_dict(doc, source="p.yaml")
    assert fragment in str(info.value) and str(info.value).startswith("p.yaml: ")


def test_yaml_errors_and_empty_policy(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not valid YAML"):
        Policy.from_yaml("rules: [", source="x.yaml")
    path = tmp_path / "empty.yaml"
    path.write_text("")
    empty = Policy.from_file(path)
    assert not empty.decide(APP, classify("SELECT * FROM sales.orders")).allowed  # default deny
    assert empty.decide(APP, classify("SELECT * FROM system.local")).allowed
