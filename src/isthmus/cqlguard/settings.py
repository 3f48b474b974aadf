"""Settings of one running guard, as frozen dataclasses grouped by concern (kopf-style).

Owns: :class:`Endpoint` (``HOST:PORT``, parsed once and printed back the same way),
:class:`Limits`, :class:`TLSSettings` and :class:`GuardSettings`, and the one place a server
TLS context is built. Must not: open sockets or read the policy (the proxy does).

Every value is validated where it enters (``__post_init__``); a bad value raises
:class:`GuardSettingsError`, a :class:`~isthmus.errors.UserError` (one line, exit code 2).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from isthmus.cqlguard.flowlog import DEFAULT_FLOWS_MAX_BYTES
from isthmus.errors import UserError

__all__ = ["DEFAULT_FLOWS_MAX_BYTES", "Endpoint", "GuardSettings", "GuardSettingsError", "Limits", "TLSSettings"]

_MIB = 1024 * 1024


class GuardSettingsError(UserError):
    """A guard setting is invalid; the message names the setting and the fix."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A TCP endpoint ``host:port``; IPv6 hosts are written ``[::1]:9042``."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host:
            raise GuardSettingsError("an endpoint needs a host, e.g. 127.0.0.1:9042")
        if not 0 <= self.port <= 65535:
            raise GuardSettingsError(f"port {self.port} is out of range 0..65535")

    @classmethod
    def parse(cls, text: str, *, what: str = "endpoint") -> Endpoint:
        host, sep, port = text.strip().rpartition(":")
        if not sep or not port.isdigit():
            raise GuardSettingsError(f"{what} {text!r} must be HOST:PORT, e.g. 127.0.0.1:9042 or [::1]:9042")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise GuardSettingsError(f"{what} {text!r}: {host!r} is not an IPv6 address") from None
        elif ":" in host:
            raise GuardSettingsError(f"{what} {text!r}: write IPv6 hosts in brackets, e.g. [::1]:9042")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Robustness limits of the pump.

    Memory held for one connection is bounded by about ``2 * (read_chunk + buffer_high_water)
    + 2 * max_frame_size``: each read takes at most ``read_chunk`` bytes, a request or response
    is forwarded only once it is whole, and reading from a side pauses while the other side's
    write buffer is above the high-water mark.
    """

    max_connections: int = 1024
    #: Close a connection with no client bytes and nothing in flight for this long.
    idle_timeout_s: float = 300.0
    #: Close a connection whose client does not drain our writes, or does not finish a frame it
    #: started, within this long (slowloris, stuck readers).
    slow_client_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    #: Largest frame body / v5 envelope body accepted from either side (Cassandra's request
    #: limit ``native_transport_max_frame_size`` defaults to 16 MiB; results may be larger).
    max_frame_size: int = 64 * _MIB
    #: Transport write buffer high-water mark, per side: above it, the pump stops reading from
    #: the other side until the buffer drains.
    buffer_high_water: int = 1 * _MIB
    read_chunk: int = 64 * 1024
    #: Requests held while a USE is unanswered (the client is not read meanwhile).
    max_held_requests: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_frame_size", "buffer_high_water", "read_chunk", "max_held_requests"):
            if getattr(self, name) <= 0:
                raise GuardSettingsError(f"limit {name} must be positive")
        for name in ("idle_timeout_s", "slow_client_timeout_s", "connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise GuardSettingsError(f"limit {name} must be a positive number of seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSSettings:
    """Server-side TLS; with ``client_ca`` clients must present a certificate it signed (mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def __post_init__(self) -> None:
        for name in ("cert", "key", "client_ca"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise GuardSettingsError(f"TLS {name} file {path} does not exist")

    def server_context(self) -> ssl.SSLContext:
        """A TLS 1.2+ server context; requires and verifies client certificates with a CA."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert, self.key)
            if self.client_ca is not None:
                ctx.load_verify_locations(cafile=self.client_ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (ssl.SSLError, OSError) as exc:
            raise GuardSettingsError(f"cannot load TLS material ({self.cert}, {self.key}): {exc}") from exc
        return ctx


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardSettings:
    """Everything one guard process needs; one CLI option per field."""

    #: Every address the guard accepts clients on (one socket each), the first being its main one. A pod's
    #: guard listens on its IP and on its loopback, so that ``kubectl port-forward`` (which connects to
    #: ``localhost`` inside the pod) reaches the guard, not Cassandra (which listens on 127.0.0.2 there).
    listen: tuple[Endpoint, ...]
    upstream: Endpoint
    policy_path: Path
    flows_path: Path | None = None
    metrics: Endpoint | None = None
    limits: Limits = field(default_factory=Limits)
    tls: TLSSettings | None = None
    #: How often the policy file's (mtime, size, inode) is checked; SIGHUP reloads at once.
    policy_poll_interval_s: float = 1.0
    #: Cap of the flows file: past it, it becomes ``<flows>.1`` and a new file begins; 0: no cap.
    flows_max_bytes: int = DEFAULT_FLOWS_MAX_BYTES
    #: Flow lines are buffered and written at least this often (and whenever 256 KiB are waiting).
    flows_flush_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.listen:
            raise GuardSettingsError("give at least one --listen HOST:PORT")
        if len(set(self.listen)) != len(self.listen):
            raise GuardSettingsError(f"--listen addresses repeat: {', '.join(map(str, self.listen))}")
        if self.upstream in self.listen:
            raise GuardSettingsError(f"--upstream {self.upstream} is also a --listen address; the guard would loop")
        if self.policy_poll_interval_s <= 0:
            raise GuardSettingsError("policy_poll_interval_s must be positive")
        if self.flows_max_bytes < 0:
            raise GuardSettingsError("--flows-max-bytes must be 0 (no cap) or a positive number of bytes")
        if self.flows_flush_interval_s <= 0:
            raise GuardSettingsError("flows_flush_interval_s must be positive")
