"""The notations of v4 §3 / v5 §3: a bounds-checked reader and the matching writers.

Every read past the end, negative length or invalid UTF-8 raises :class:`ProtocolError`;
nothing else escapes (``struct.error``, ``UnicodeDecodeError`` and ``IndexError`` are
translated here, at the boundary).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from isthmus.cqlguard.protocol.errors import ProtocolError

__all__ = [
    "Reader",
    "write_bytes",
    "write_int",
    "write_long_string",
    "write_short",
    "write_short_bytes",
    "write_string",
    "write_string_list",
    "write_string_map",
]

_SHORT = struct.Struct(">H")
_INT = struct.Struct(">i")
_UINT = struct.Struct(">I")
_LONG = struct.Struct(">q")


class Reader:
    """A cursor over one message body."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int, what: str) -> bytes:
        if n < 0:
            raise ProtocolError(f"negative length {n} for {what}")
        end = self._pos + n
        if end > len(self._data):
            raise ProtocolError(f"truncated body: {what} needs {n} bytes, {self.remaining} left")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def skip(self, n: int, what: str = "bytes") -> None:
        self._take(n, what)

    def byte(self) -> int:
        return self._take(1, "[byte]")[0]

    def short(self) -> int:
        value: int = _SHORT.unpack(self._take(2, "[short]"))[0]
        return value

    def int32(self) -> int:
        value: int = _INT.unpack(self._take(4, "[int]"))[0]
        return value

    def uint32(self) -> int:
        value: int = _UINT.unpack(self._take(4, "[int] flags"))[0]
        return value

    def int64(self) -> int:
        value: int = _LONG.unpack(self._take(8, "[long]"))[0]
        return value

    def _text(self, raw: bytes, what: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{what} is not valid UTF-8") from exc

    def string(self) -> str:
        return self._text(self._take(self.short(), "[string]"), "[string]")

    def long_string(self) -> str:
        return self._text(self._take(self.int32(), "[long string]"), "[long string]")

    def nullable_bytes(self) -> bytes | None:
        n = self.int32()
        return None if n < 0 else self._take(n, "[bytes]")

    def short_bytes(self) -> bytes:
        return self._take(self.short(), "[short bytes]")

    def value(self) -> None:
        """Skip one [value] (n >= 0 bytes, -1 null, -2 not set; below -2 is invalid)."""
        n = self.int32()
        if n < -2:
            raise ProtocolError(f"invalid [value] length {n}")
        if n > 0:
            self._take(n, "[value]")

    def uuid(self) -> bytes:
        return self._take(16, "[uuid]")

    def string_list(self) -> tuple[str, ...]:
        return tuple(self.string() for _ in range(self.short()))

    def string_map(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for _ in range(self.short()):
            key = self.string()
            result[key] = self.string()
        return result

    def string_multimap(self) -> dict[str, tuple[str, ...]]:
        result: dict[str, tuple[str, ...]] = {}
        for _ in range(self.short()):
            key = self.string()
            result[key] = self.string_list()
        return result

    def skip_bytes_map(self) -> None:
        for _ in range(self.short()):
            self.string()
            self.nullable_bytes()


def write_short(value: int) -> bytes:
    return _SHORT.pack(value)


def write_int(value: int) -> bytes:
    return _INT.pack(value)


def write_string(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ProtocolError("[string] longer than 65535 bytes")
    return _SHORT.pack(len(raw)) + raw


def write_long_string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _INT.pack(len(raw)) + raw


def write_bytes(value: bytes | None) -> bytes:
    if value is None:
        return _INT.pack(-1)
    return _INT.pack(len(value)) + value


def write_short_bytes(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ProtocolError("[short bytes] longer than 65535 bytes")
    return _SHORT.pack(len(value)) + value


def write_string_list(values: Sequence[str]) -> bytes:
    return _SHORT.pack(len(values)) + b"".join(write_string(v) for v in values)


def write_string_map(values: Mapping[str, str]) -> bytes:
    return _SHORT.pack(len(values)) + b"".join(write_string(k) + write_string(v) for k, v in values.items())
