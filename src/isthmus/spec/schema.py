"""JSON Schema of every spec kind, so editors (yaml-language-server) can validate specs as they are typed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .apps import KINDS
from .fleet import Fleet

__all__ = ["json_schema", "kind_models"]


def kind_models() -> dict[str, type[BaseModel]]:
    return {"Fleet": Fleet, **KINDS}


def json_schema(kind: str | None = None) -> dict[str, Any]:
    """One kind's schema, or a ``oneOf`` over every kind when ``kind`` is None."""
    models = kind_models()
    if kind is not None:
        return models[kind].model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = {}
    refs = []
    for name, model in models.items():
        schema = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}", mode="validation")
        defs.update(schema.pop("$defs", {}))
        defs[name] = schema
        refs.append({"$ref": f"#/$defs/{name}"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Isthmus spec document",
        "oneOf": refs,
        "$defs": defs,
    }
