"""Immutable events produced by :class:`~isthmus.cqlguard.protocol.connection.CQLConnection`.

``raw`` is the envelope exactly as it arrived (for v4 possibly lz4-compressed), ``body`` the
uncompressed body. Both are excluded from ``repr`` because an AUTH_RESPONSE carries a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from isthmus.cqlguard.protocol.constants import HeaderFlag, Opcode
from isthmus.cqlguard.protocol.messages import RequestMessage, ResponseMessage

__all__ = ["Event", "ProxyReply", "Request", "Response"]


@dataclass(frozen=True, slots=True)
class Request:
    """A client request, decoded.

    ``keyspace`` is the keyspace unqualified names resolve against for this request: the v5
    per-request keyspace when the message carries one, else the connection keyspace (as last
    confirmed by the server's RESULT Set_keyspace) when the request arrived.
    """

    stream: int
    opcode: Opcode
    version: int
    flags: HeaderFlag
    message: RequestMessage
    keyspace: str | None
    raw: bytes = field(repr=False)
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Response:
    """A server response, decoded; ``request`` is the forwarded request it answers, if any."""

    stream: int
    opcode: Opcode
    version: int
    flags: HeaderFlag
    message: ResponseMessage
    request: Request | None
    raw: bytes = field(repr=False)
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ProxyReply:
    """The proxy answers the client itself (handshake refusals): write ``data`` to the client.

    The refused request is consumed; it must not be forwarded.
    """

    stream: int
    reason: str
    data: bytes = field(repr=False)


Event = Request | Response | ProxyReply
