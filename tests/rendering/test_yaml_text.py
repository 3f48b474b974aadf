"""The YAML text we render is the same whichever emitter PyYAML uses (render.yamltext).

Content hashes are taken over the rendered text, so if libyaml's emitter (fast, used when PyYAML has
it) wrote anything differently from PyYAML's own, a machine with the other one would see every
ConfigMap changed and roll every pod. The spec below carries what could tell them apart: non-ASCII
names, strings YAML would read as other types, long table names.
"""

from __future__ import annotations

from typing import Any

import yaml

from fixtures.labspecs import app_doc, fleet_doc
from isthmus.render import render
from isthmus.render.yamltext import DUMPER, LOADER, dump_text, load_text
from isthmus.spec import load_text as load_spec


def rendered_texts() -> list[str]:
    doc = app_doc("orders")
    doc["spec"]["access"] = {"enabled": True, "rules": [
        {"name": "règle-ü", "identities": {"users": ["usér", "a:b", "'q'", "yes", "0123", "null", "#x", "- y"]},
         "allow": [{"actions": ["read"], "tables": ["shop.orders", "k.t" + "z" * 200]}]}]}
    specs = load_spec(yaml.safe_dump(fleet_doc()) + "---\n" + yaml.safe_dump(doc))
    assert specs.fleet is not None
    texts: list[str] = []
    for app in specs.apps:
        manifests = render(app, specs.fleet)
        for cluster in manifests.clusters:
            for obj in manifests.for_cluster(cluster):
                if obj["kind"] == "ConfigMap":
                    texts += [v for k, v in (obj.get("data") or {}).items() if k.endswith(".yaml")]
    return texts


def test_pyyaml_has_libyaml_here() -> None:
    assert yaml.__with_libyaml__, "PyYAML without libyaml: rendering falls back to its slow emitter"
    assert DUMPER is yaml.CSafeDumper and LOADER is yaml.CSafeLoader


def test_both_emitters_write_the_same_text_for_what_we_render() -> None:
    texts = rendered_texts()
    assert len(texts) >= 4  # cassandra.yaml per datacenter, policy.yaml per member
    policies = [d for d in map(load_text, texts) if "rules" in d]
    assert any(rule["name"] == "règle-ü" for p in policies for rule in p["rules"])
    for text in texts:
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        doc: Any = load_text(text)
        assert doc == yaml.load(text, Loader=yaml.SafeLoader)  # SafeLoader: plain types only
        assert header + dump_text(doc, dumper=yaml.SafeDumper) == text
        assert header + dump_text(doc, dumper=yaml.CSafeDumper) == text
