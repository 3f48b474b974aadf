"""Writing the flows file: buffered, append-only, size-capped, rotation-safe, off the event loop.

Owns: :class:`FlowWriter` (one ``write`` per batch; size-capped with one rotated file
``<path>.1``; safe under ``logrotate``: the file is reopened when it was moved away or
truncated) and :class:`FlowLog` (a writer on a thread of its own, so that flow writes never
block the event loop). The lines are :mod:`.flows`' format. Must not: decide anything or
touch sockets.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isthmus.cqlguard.flows import Flow

__all__ = ["DEFAULT_FLOWS_MAX_BYTES", "FlowLog", "FlowWriter"]

#: The flows file's default cap (kept: the file and one rotated ``.1``).
DEFAULT_FLOWS_MAX_BYTES = 100 * 1024 * 1024


class FlowWriter:
    """Appends flow lines to ``path``; buffered lines go out in one ``write`` per :meth:`flush`.

    The owner calls :meth:`flush` periodically (the guard: every ``flush_interval_s``) and
    whenever :attr:`due` (``flush_bytes`` buffered), so a busy guard makes one ``write`` per
    batch, not per decision.

    Size cap: with ``max_bytes`` (0: none), a flush that would take the file past it first
    renames the file to ``<path>.1`` (replacing the previous one) and starts a new one; at most
    about ``2 * max_bytes`` are kept. A single batch larger than the cap still goes out whole.

    Rotation-safe: the file is opened ``O_APPEND``; before a flush, at most once per
    ``check_interval_s``, it is reopened if the path now names another file (moved away by
    logrotate) or none. Write errors are counted, never raised: flows must not stop traffic.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_FLOWS_MAX_BYTES,
        flush_bytes: int = 256 * 1024,
        check_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.path = path
        self.rotated_path = path.with_name(path.name + ".1")
        self.max_bytes = max_bytes
        self._flush_bytes = flush_bytes
        self._check_interval = check_interval_s
        self._clock = clock
        self._pending: list[str] = []
        self._pending_chars = 0
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._size = 0
        self._checked_at = float("-inf")
        self.errors = 0
        self.written = 0
        self.rotations = 0
        self._open()

    def _open(self) -> None:
        self._close_fd()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError:
            self.errors += 1
            return
        st = os.fstat(fd)
        self._fd, self._inode, self._size = fd, (st.st_dev, st.st_ino), st.st_size
        self._checked_at = self._clock()

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _reopen_if_rotated(self) -> None:
        now = self._clock()
        if self._fd is not None and now - self._checked_at < self._check_interval:
            return
        self._checked_at = now
        try:
            st = self.path.stat()
            same = (st.st_dev, st.st_ino) == self._inode
        except OSError:
            same = False
        if not same or self._fd is None:
            self._open()
        elif st.st_size < self._size:  # truncated (logrotate copytruncate)
            self._size = st.st_size

    def _rotate(self) -> None:
        try:
            self.path.replace(self.rotated_path)
        except OSError:
            self.errors += 1
            return
        self.rotations += 1
        self._open()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def due(self) -> bool:
        """True once enough is buffered to flush now rather than at the next period."""
        return self._pending_chars >= self._flush_bytes

    def add(self, flow: Flow) -> None:
        self.add_line(flow.to_line())

    def add_line(self, line: str) -> None:
        """Buffer one rendered line (ending in a newline)."""
        self._pending.append(line)
        self._pending_chars += len(line)

    def add_lines(self, lines: list[str]) -> None:
        self._pending += lines
        self._pending_chars += sum(map(len, lines))

    def write(self, flow: Flow) -> None:
        """Add and flush at once (for callers that do not batch)."""
        self.add(flow)
        self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        lines, self._pending, self._pending_chars = self._pending, [], 0
        self.write_lines(lines)

    def write_lines(self, lines: list[str]) -> None:
        """Write ``lines`` now, in one ``write`` (rotating first when the cap says so)."""
        self._reopen_if_rotated()
        data = "".join(lines).encode("utf-8")
        if self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        if self._fd is None:
            self.errors += 1
            return
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self._size += n
            self.written += len(lines)
        except OSError:
            self.errors += 1

    def close(self) -> None:
        self.flush()
        self._close_fd()


class FlowLog:
    """A :class:`FlowWriter` on a thread of its own: the event loop only hands it lines.

    :meth:`add_lines` appends to a buffer under a lock and returns; the writer thread writes
    the buffer every ``flush_interval_s``, or at once when ``flush_bytes`` are waiting. The
    file format, the size cap and rotation are the writer's. :meth:`flush` writes what was
    added so far before it returns (from any thread); :meth:`close` stops the thread and
    writes the rest.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_FLOWS_MAX_BYTES,
        flush_interval_s: float = 1.0,
        flush_bytes: int = 256 * 1024,
    ) -> None:
        self._writer = FlowWriter(path, max_bytes=max_bytes)
        self._interval = flush_interval_s
        self._flush_bytes = flush_bytes
        self._pending: list[str] = []
        self._pending_chars = 0
        self._lock = threading.Lock()  # the buffer
        self._io = threading.Lock()  # one write at a time, in order
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"cqlguard flows {path.name}", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self._writer.path

    @property
    def rotations(self) -> int:
        return self._writer.rotations

    @property
    def errors(self) -> int:
        return self._writer.errors

    @property
    def written(self) -> int:
        return self._writer.written

    def add_lines(self, lines: list[str]) -> None:
        """Buffer rendered lines (each ending in a newline); never blocks on the file."""
        with self._lock:
            self._pending += lines
            self._pending_chars += sum(map(len, lines))
            due = self._pending_chars >= self._flush_bytes
        if due:
            self._wake.set()

    def flush(self) -> None:
        """Write every line added so far, before returning."""
        with self._io:
            with self._lock:
                lines, self._pending, self._pending_chars = self._pending, [], 0
            if lines:
                self._writer.write_lines(lines)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the writer thread, write what is left and close the file."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        with self._io:
            self._writer.close()
