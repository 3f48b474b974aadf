"""Who is on the client side of a connection: its address and, over mTLS, its certificate's identity.

Owns: :class:`Peer` and reading it from what a transport reports (:func:`peer_of`, from the
socket's peer name and the verified certificate as ``ssl.SSLSocket.getpeercert`` returns it).
Must not: open sockets or read files; the pump hands these values in.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Address", "Peer", "peer_of", "tls_principal", "tls_subject"]

_RDN_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "domainComponent": "DC",
}


class Address(Protocol):
    """Where the upstream is (a :class:`~isthmus.cqlguard.settings.Endpoint`)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Peer:
    """A client: its address (None when it is not an IP address), and its TLS identity."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    ip: str | None = None
    port: int | None = None
    principal: str | None = None
    subject: str | None = None


def tls_principal(peercert: dict[str, Any] | None) -> str | None:
    """The TLS identity of a verified client certificate: its SPIFFE URI SAN, else its subject.

    The subject is written RFC 4514-style, most specific first (``CN=app,O=acme``).
    """
    if not peercert:
        return None
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "URI" and str(value).startswith("spiffe://"):
            return str(value)
    return tls_subject(peercert)


def tls_subject(peercert: dict[str, Any] | None) -> str | None:
    """The subject of a verified client certificate, RFC 4514-style (``CN=app,O=acme``)."""
    if not peercert:
        return None
    rdns = [f"{_RDN_NAMES.get(k, k)}={v}" for rdn in peercert.get("subject", ()) for k, v in rdn]
    return ",".join(reversed(rdns)) or None


def peer_of(peername: Any, peercert: dict[str, Any] | None) -> Peer:
    """The peer of a connection, from its socket's ``peername`` and its verified certificate."""
    address = ip = port = None
    if isinstance(peername, tuple) and len(peername) >= 2:
        ip, port = str(peername[0]), int(peername[1])
        try:
            address = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            address = None
    return Peer(address, ip, port, tls_principal(peercert), tls_subject(peercert))
