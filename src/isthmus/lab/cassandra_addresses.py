"""Claiming loopback addresses for lab Cassandra nodes, so that parallel sessions never collide.

Owns: :func:`claim_addresses`, which finds a block ``127.0.<b>.1 .. 127.0.<b>.<n>`` whose
CQL and storage ports are free and holds an exclusive ``flock`` on a per-block lock file
until released. The kernel drops the lock when the holding process dies, so a crashed test
session never leaves a block claimed. Every node of the lab still uses the standard ports
(9042, 7000); only its address differs.
Must not: start or stop processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from isthmus.lab.cassandra_install import CassandraLabError

__all__ = ["AddressClaim", "claim_addresses", "lock_dir"]

_FIRST_BLOCK = 1  # 127.0.0.x is left to everything else on the machine
_LAST_BLOCK = 254


def lock_dir() -> Path:
    """Where block lock files live (shared by every session of every user on this machine)."""
    return Path(os.environ.get("ISTHMUS_LAB_LOCK_DIR") or Path(tempfile.gettempdir()) / "isthmus-lab-addresses")


@dataclass
class AddressClaim:
    """A held block of loopback addresses; release it (or leave the ``with`` block) when done."""

    addresses: tuple[str, ...]
    _handle: IO[str] | None = field(default=None, repr=False)

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> AddressClaim:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _bindable(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def claim_addresses(
    count: int, *, ports: Sequence[int] = (9042, 7000), first_block: int = _FIRST_BLOCK
) -> AddressClaim:
    """Claim ``count`` consecutive addresses ``127.0.<b>.1..`` whose ``ports`` are all free.

    Blocks are tried from ``127.0.<first_block>.x`` upwards; one whose lock another session
    holds, or whose ports something else listens on, is skipped.
    """
    if not 1 <= count <= 254:
        raise ValueError(f"can claim 1 to 254 addresses, not {count}")
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        folder.chmod(0o1777)
    for block in range(first_block, _LAST_BLOCK + 1):
        addresses = tuple(f"127.0.{block}.{i}" for i in range(1, count + 1))
        handle = (folder / f"127.0.{block}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        if all(_bindable(a, p) for a in addresses for p in ports):
            return AddressClaim(addresses, handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
    raise CassandraLabError(f"no block of {count} free loopback addresses in 127.0.{first_block}-{_LAST_BLOCK}.x")
