"""Reading spec documents from YAML, keeping every value's line so errors can point at it."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from ._base import API_VERSION
from .apps import KINDS, App
from .errors import Problem, SpecError
from .fleet import Fleet

__all__ = ["Document", "SpecSet", "load_file", "load_files", "load_text", "locate"]

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class Document:
    """One YAML document: the validated model and where each of its values came from."""

    model: Fleet | App
    file: str
    lines: dict[PathKey, int]

    def line_of(self, path: Sequence[str | int]) -> int | None:
        return locate(self.lines, tuple(path))


@dataclass(frozen=True)
class SpecSet:
    """Everything loaded from one or more files: at most one Fleet and any number of apps."""

    documents: list[Document] = field(default_factory=list)

    @property
    def fleet(self) -> Fleet | None:
        fleets = [d.model for d in self.documents if isinstance(d.model, Fleet)]
        return fleets[0] if fleets else None

    @property
    def apps(self) -> list[App]:
        return [d.model for d in self.documents if isinstance(d.model, App)]

    def document_of(self, model: object) -> Document:
        return next(d for d in self.documents if d.model is model)


def locate(lines: dict[PathKey, int], path: PathKey) -> int | None:
    """The line of the deepest known prefix of ``path`` (a missing key points at its parent)."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


class _LineLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys, which PyYAML would silently overwrite."""


def _record_lines(node: yaml.Node, path: PathKey, lines: dict[PathKey, int], file: str) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise SpecError([Problem(f"key {key!r} appears twice", file, key_node.start_mark.line + 1,
                                         _dotted((*path, key)))])
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _record_lines(value_node, (*path, key), lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, index), lines, file)


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _parse(text: str, file: str) -> list[tuple[Any, dict[PathKey, int]]]:
    loader = _LineLoader(text)
    docs: list[tuple[Any, dict[PathKey, int]]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[PathKey, int] = {}
            _record_lines(node, (), lines, file)
            docs.append((loader.construct_document(node), lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError([Problem(f"not valid YAML: {exc.problem or exc}", file, line)]) from exc
    finally:
        loader.dispose()
    return docs


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _unwrap(annotation: Any) -> Any:
    """Peel Optional/list/dict/Annotated down to the model a nested key belongs to."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
            return models[0] if models else None
        elif origin in (list, tuple, set, frozenset, dict):
            annotation = typing.get_args(annotation)[-1]
        else:
            return annotation


def _model_at(root: type[BaseModel], path: Sequence[str | int]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in path:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        match = next((i for n, i in model.model_fields.items() if (i.alias or n) == part), None)
        if match is None:
            return None
        inner = _unwrap(match.annotation)
        model = inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None
    return model


def _problems(exc: ValidationError, model: type[BaseModel], file: str, lines: dict[PathKey, int]) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            unknown = str(loc[-1])
            message = f"unknown field {unknown!r}"
            if parent is not None:
                close = difflib.get_close_matches(unknown, _field_names(parent), n=1, cutoff=0.6)
                message += f"; did you mean {close[0]!r}?" if close else (
                    "; allowed: " + ", ".join(_field_names(parent)))
        elif err["type"] == "missing":
            message = f"required field {str(loc[-1])!r} is missing"
        elif "input" in err and err["type"] not in ("value_error",) and not isinstance(err["input"], dict | list):
            message += f" (got {err['input']!r})"
        problems.append(Problem(message, file, locate(lines, loc), _dotted(loc) or None))
    return problems


def _validate(raw: Any, file: str, lines: dict[PathKey, int]) -> Fleet | App:
    if not isinstance(raw, dict):
        raise SpecError([Problem("a spec document must be a mapping with apiVersion, kind, metadata and spec",
                                 file, locate(lines, ()))])
    kind, api = raw.get("kind"), raw.get("apiVersion")
    if api != API_VERSION:
        raise SpecError([Problem(f"apiVersion must be {API_VERSION!r} (got {api!r})", file,
                                 locate(lines, ("apiVersion",)), "apiVersion")])
    known: dict[str, type[BaseModel]] = {"Fleet": Fleet, **KINDS}
    if kind not in known:
        close = difflib.get_close_matches(str(kind), list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known kinds: {', '.join(sorted(known))}"
        raise SpecError([Problem(f"unknown kind {kind!r}{hint}", file, locate(lines, ("kind",)), "kind")])
    model = known[kind]
    try:
        value = model.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_problems(exc, model, file, lines)) from exc
    assert isinstance(value, Fleet | App)
    return value


def load_text(text: str, file: str = "<spec>") -> SpecSet:
    documents = []
    problems: list[Problem] = []
    for raw, lines in _parse(text, file):
        if raw is None:
            continue
        try:
            documents.append(Document(_validate(raw, file, lines), file, lines))
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    if not documents:
        raise SpecError([Problem("no spec documents found (expected a Fleet and/or app kinds)", file, 1)])
    return SpecSet(documents)


def load_file(path: str | Path) -> SpecSet:
    return load_files([path])


def load_files(paths: Iterable[str | Path]) -> SpecSet:
    documents: list[Document] = []
    problems: list[Problem] = []
    for path in paths:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise SpecError([Problem("file not found; check the path", str(p))]) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError([Problem(f"cannot read the file: {exc}", str(p))]) from exc
        try:
            documents.extend(load_text(text, str(p)).documents)
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    fleets = [d for d in documents if isinstance(d.model, Fleet)]
    if len(fleets) > 1:
        raise SpecError([Problem("more than one Fleet given; pass one Fleet per command", d.file, d.line_of(()))
                         for d in fleets[1:]])
    return SpecSet(documents)
