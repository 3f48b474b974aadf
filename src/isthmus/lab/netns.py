"""Running a piece of Python inside a network namespace, in one thread only.

Owns: ``setns(2)`` through ctypes (Python 3.11 has no ``os.setns``), and :func:`run_in_netns`,
which runs a callable on a fresh thread that has entered the namespace: sockets it creates stay
in that namespace for their whole life, while the rest of the process (its API clients on
127.0.0.1) stays in the host namespace. Must not: create or delete namespaces (:mod:`.podnet`).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["CLONE_NEWNET", "NETNS_RUN_DIR", "netns_path", "run_in_netns"]

CLONE_NEWNET = 0x40000000
#: Where ``ip netns add`` pins named namespaces.
NETNS_RUN_DIR = Path("/run/netns")

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> Path:
    return NETNS_RUN_DIR / name


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET) failed: {os.strerror(err)}")


def run_in_netns(name: str, fn: Callable[[], T]) -> T:
    """``fn()`` on a new thread inside network namespace ``name``; its result or its exception.

    The thread ends with ``fn``, so no thread of this process is ever left in the namespace.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            error.append(FileNotFoundError(f"network namespace {name!r} does not exist ({netns_path(name)})"))
            return
        try:
            _setns(fd)
        except OSError as exc:
            error.append(exc)
            return
        finally:
            os.close(fd)
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
