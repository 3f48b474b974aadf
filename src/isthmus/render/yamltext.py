"""The YAML text Isthmus renders into objects (``cassandra.yaml``, the guard's ``policy.yaml``): one dumper.

Owns: :func:`dump_text` (block style, keys in the order given, no line folding) and :func:`load_text`,
through libyaml's emitter and parser when PyYAML was built with it, else PyYAML's own. The two
emit the same text for what we render (``tests/rendering/test_yaml_text.py`` holds them to it), so a
content hash does not depend on which one a machine has; libyaml is about ten times faster, which
is most of the operator's time between reading a change and writing it.
Must not: render anything itself.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["DUMPER", "LOADER", "dump_text", "load_text"]

DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def dump_text(doc: Any, *, dumper: type[yaml.SafeDumper] | None = None) -> str:
    """``doc`` as block-style YAML, keys in their order, lines never folded."""
    return yaml.dump(doc, Dumper=dumper or DUMPER, sort_keys=False, default_flow_style=False, width=1_000_000)


def load_text(text: str) -> Any:
    """The document in ``text`` (plain YAML types only)."""
    return yaml.load(text, Loader=LOADER)  # LOADER is a safe loader (libyaml's or PyYAML's)
