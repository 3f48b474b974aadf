"""Render stays pure (imports no I/O) and sizes the JVM from the container's resources."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import isthmus.render
from isthmus.render import RenderError
from isthmus.render.quantities import heap_settings, quantity

FORBIDDEN = {"asyncio", "socket", "subprocess", "kopf", "lightkube", "httpx", "random", "secrets",
             "time", "datetime", "os", "pathlib", "uuid", "isthmus.kube", "isthmus.lab"}


def test_render_modules_import_nothing_impure() -> None:
    package = Path(isthmus.render.__file__).parent
    for module in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), (module.name, name)


def test_public_surface_is_what_all_says() -> None:
    assert sorted(isthmus.render.__all__) == sorted(
        n for n in vars(isthmus.render) if not n.startswith("_") and n.isidentifier()
        and not isinstance(getattr(isthmus.render, n), type(isthmus.render)))


@pytest.mark.parametrize(("text", "value"), [("4Gi", 4 * 2**30), ("500m", 0.5), ("1.5G", 1.5e9), ("2", 2)])
def test_quantities(text: str, value: float) -> None:
    assert quantity(text) == value


@pytest.mark.parametrize(("memory", "cpu", "heap", "expected"), [
    ("8Gi", "2", "2G", ("2048M", "200M")),
    ("8Gi", "2", None, ("2048M", "200M")),
    ("4Gi", "500m", None, ("1024M", "100M")),
    ("2Gi", "8", None, ("512M", "128M")),
])
def test_heap_settings(memory: str, cpu: str, heap: str | None, expected: tuple[str, str]) -> None:
    settings = heap_settings(memory=memory, cpu=cpu, heap=heap)
    assert (settings.max_heap, settings.new_size) == expected


def test_bad_quantity_is_a_render_error() -> None:
    with pytest.raises(RenderError):
        quantity("lots")
