"""Asking the lab DNS a question from inside a lab network namespace (for readiness and tests).

Owns: :func:`query` and :func:`resolve_a`. Must not: serve anything (:mod:`.dnsserver`).
"""

from __future__ import annotations

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from .netns import run_in_netns

__all__ = ["query", "resolve_a"]


def query(netns: str, server: str, name: str, rdtype: str = "A", *, timeout: float = 2.0,
          tcp: bool = False) -> dns.message.Message:
    """Ask the DNS at ``server`` a question from inside network namespace ``netns``."""
    request = dns.message.make_query(name, rdtype)

    def ask() -> dns.message.Message:
        if tcp:
            return dns.query.tcp(request, server, timeout=timeout)
        return dns.query.udp(request, server, timeout=timeout)

    return run_in_netns(netns, ask)


def resolve_a(netns: str, server: str, name: str, *, timeout: float = 1.0) -> list[str]:
    """The A records of ``name`` asked from inside ``netns``; empty on NXDOMAIN, NODATA or no answer."""
    try:
        reply = query(netns, server, name, "A", timeout=timeout)
    except (dns.exception.DNSException, OSError):
        return []
    return sorted(rr.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset)
