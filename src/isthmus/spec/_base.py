"""The base every spec model shares: camelCase keys, unknown keys refused, frozen values."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = ["API_VERSION", "SpecModel"]

API_VERSION: Final = "isthmus.dev/v1alpha1"


class SpecModel(BaseModel):
    """A spec value: YAML keys are camelCase, Python attributes snake_case, unknown keys rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
    )
