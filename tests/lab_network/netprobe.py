"""Probes for the pod network tests: UDP with DF set between two pod namespaces, host facts."""

from __future__ import annotations

import socket
import subprocess

from isthmus.lab.netns import run_in_netns
from isthmus.lab.podnet import PodNetwork

IP_MTU_DISCOVER = 10  # linux/in.h
IP_PMTUDISC_DO = 2
IP_UDP_HEADERS = 20 + 8


def udp_df(src: PodNetwork, dst: PodNetwork, packet_size: int, *, port: int = 9999, wait: float = 2.0) -> str:
    """Send one UDP datagram with DF set whose IP packet is ``packet_size`` bytes from ``src`` to ``dst``.

    Returns ``"delivered"``, ``"lost"`` (nothing arrived within ``wait`` seconds) or ``"refused: <error>"``
    (the sender's kernel would not send it, e.g. EMSGSIZE above the route MTU).
    """
    recv = run_in_netns(dst.netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    send = run_in_netns(src.netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with recv, send:
        recv.bind((str(dst.ip), port))
        recv.settimeout(wait)
        send.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        payload = b"m" * (packet_size - IP_UDP_HEADERS)
        try:
            send.sendto(payload, (str(dst.ip), port))
        except OSError as exc:
            return f"refused: {exc.strerror}"
        try:
            data = recv.recv(65535)
        except TimeoutError:
            return "lost"
        assert data == payload
        return "delivered"


def ip(*args: str, netns: str | None = None) -> str:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
