"""Handcrafted native-protocol bytes, written from the spec independently of the codec."""

from __future__ import annotations

import struct
import zlib

import lz4.block


def frame(version: int, stream: int, opcode: int, body: bytes, *, response: bool = False, flags: int = 0) -> bytes:
    return struct.pack(">BBhBi", version | (0x80 if response else 0), flags, stream, opcode, len(body)) + body


def string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">H", len(raw)) + raw


def long_string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">i", len(raw)) + raw


def short_bytes(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def nbytes(b: bytes | None) -> bytes:
    return struct.pack(">i", -1) if b is None else struct.pack(">i", len(b)) + b


def string_map(d: dict[str, str]) -> bytes:
    return struct.pack(">H", len(d)) + b"".join(string(k) + string(v) for k, v in d.items())


def startup(version: int = 4, *, compression: str | None = None, stream: int = 0) -> bytes:
    options = {"CQL_VERSION": "3.0.0"}
    if compression:
        options["COMPRESSION"] = compression
    return frame(version, stream, 0x01, string_map(options))


def ready(version: int = 4, stream: int = 0) -> bytes:
    return frame(version, stream, 0x02, b"", response=True)


def authenticate(version: int = 4, stream: int = 0) -> bytes:
    return frame(version, stream, 0x03, string("org.apache.cassandra.auth.PasswordAuthenticator"), response=True)


def auth_response(user: str, password: str, version: int = 4, stream: int = 0) -> bytes:
    return frame(version, stream, 0x0F, nbytes(b"\x00" + user.encode() + b"\x00" + password.encode()))


def auth_success(version: int = 4, stream: int = 0) -> bytes:
    return frame(version, stream, 0x10, nbytes(None), response=True)


def query_body(q: str, version: int = 4, *, keyspace: str | None = None, values: tuple[bytes, ...] = ()) -> bytes:
    flags = 0
    rest = b""
    if values:
        flags |= 0x01
        rest += struct.pack(">H", len(values)) + b"".join(nbytes(v) for v in values)
    flags |= 0x04
    rest += struct.pack(">i", 5000)
    if keyspace is not None:
        assert version >= 5
        flags |= 0x80
        rest += string(keyspace)
    packed_flags = struct.pack(">I", flags) if version >= 5 else struct.pack(">B", flags)
    return long_string(q) + struct.pack(">H", 0x0001) + packed_flags + rest


def query(q: str, version: int = 4, stream: int = 1, **kw: object) -> bytes:
    return frame(version, stream, 0x07, query_body(q, version, **kw))  # type: ignore[arg-type]


def prepare(q: str, version: int = 4, stream: int = 1, keyspace: str | None = None) -> bytes:
    body = long_string(q)
    if version >= 5:
        body += struct.pack(">I", 0x01 if keyspace else 0) + (string(keyspace) if keyspace else b"")
    return frame(version, stream, 0x09, body)


def execute(prepared_id: bytes, version: int = 4, stream: int = 1) -> bytes:
    body = short_bytes(prepared_id)
    if version >= 5:
        body += short_bytes(b"meta")
    body += struct.pack(">H", 1) + (struct.pack(">I", 0) if version >= 5 else b"\x00")
    return frame(version, stream, 0x0A, body)


def result_void(version: int = 4, stream: int = 1) -> bytes:
    return frame(version, stream, 0x08, struct.pack(">i", 1), response=True)


def result_set_keyspace(ks: str, version: int = 4, stream: int = 1) -> bytes:
    return frame(version, stream, 0x08, struct.pack(">i", 3) + string(ks), response=True)


def result_prepared(pid: bytes, version: int = 4, stream: int = 1) -> bytes:
    body = struct.pack(">i", 4) + short_bytes(pid)
    if version >= 5:
        body += short_bytes(b"meta")
    # <metadata>: flags, columns_count, pk_count ; <result_metadata>: flags(no_metadata), count
    body += struct.pack(">iii", 0, 0, 0) + struct.pack(">ii", 4, 0)
    return frame(version, stream, 0x08, body, response=True)


def lz4_body(body: bytes) -> bytes:
    """v4 §5: 4-byte big-endian uncompressed length + raw lz4 block."""
    block: bytes = lz4.block.compress(body, store_size=False)
    return struct.pack(">I", len(body)) + block


# --- v5 segments, straight from v5 §2.1/§2.2 and Crc.java ------------------------------


def _crc24(value: int, n: int) -> int:
    crc = 0x875060
    for _ in range(n):
        crc ^= (value & 0xFF) << 16
        value >>= 8
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1974F0B
    return crc


def _crc32(payload: bytes) -> bytes:
    crc = zlib.crc32(b"\xfa\x2d\x55\xca")
    return zlib.crc32(payload, crc).to_bytes(4, "little")


def segment(payload: bytes, *, self_contained: bool = True) -> bytes:
    header = len(payload) | (int(self_contained) << 17)
    return header.to_bytes(3, "little") + _crc24(header, 3).to_bytes(3, "little") + payload + _crc32(payload)


def lz4_segment(payload: bytes, *, self_contained: bool = True, store: bool = False) -> bytes:
    body: bytes = payload if store else lz4.block.compress(payload, store_size=False)
    uncompressed = 0 if store else len(payload)
    header = len(body) | (uncompressed << 17) | (int(self_contained) << 34)
    return header.to_bytes(5, "little") + _crc24(header, 5).to_bytes(3, "little") + body + _crc32(body)
