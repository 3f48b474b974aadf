"""The one console every command writes through.

rich already honours ``NO_COLOR``, ``FORCE_COLOR``, ``TERM=dumb`` and non-TTY output; keeping a
single instance (replaceable in tests) means every command agrees on colour and width.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import yaml
from rich.console import Console

__all__ = ["dump", "err_console", "out_console", "use_consoles"]

# A pipe or a file has no width of its own; rich would assume 80 and squeeze tables of CIDRs.
_PIPE_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140
out_console = Console(soft_wrap=False, width=_PIPE_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)


def use_consoles(out: Console, err: Console) -> None:
    """Swap the consoles, for tests that capture output."""
    global out_console, err_console
    out_console, err_console = out, err


def dump(data: Any, fmt: str) -> None:
    """Machine-readable output: exactly the document, no colour, no wrapping."""
    text = json.dumps(data, indent=2) + "\n" if fmt == "json" else yaml.safe_dump(data, sort_keys=False)
    sys.stdout.write(text)
    sys.stdout.flush()
