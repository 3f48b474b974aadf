"""Distance in the lab: Toxiproxy between the lab's clients and each cluster's API server.

Owns: the :class:`Link` value (round trip, jitter, bandwidth, partition) and its translation to
Toxiproxy toxics and back, the parsing of ``80ms`` / ``1MB/s`` style values, the RTT profiles
(:data:`RTT_PROFILES`), the one Toxiproxy process of a lab (its state file
``<state>/toxiproxy.json``, one proxy per cluster listening on its own loopback port and forwarding
to the cluster's API server), and the small HTTP client of Toxiproxy's API.
Must not: know the Kubernetes components; :class:`~isthmus.lab.lab.Lab` starts and stops the
proxy and points the shared kubeconfig through it.

How a link maps to toxics: a round trip ``R`` is a latency toxic of ``R // 2`` on the upstream
(client to API server) stream plus one of ``R - R // 2`` downstream, each chunk delayed from the
moment it arrived (so a stream is not slowed down chunk by chunk). Jitter is split the same way.
The proxy accepts the TCP connection itself, so a new connection pays one round trip for TLS 1.3
and then one per request; a real link would add one more for the TCP handshake. A bandwidth
toxic limits each direction to the rate. A partition is a ``timeout`` toxic with timeout 0 on
both streams: connections are accepted, then nothing answers, and open connections go silent.
Healing it (removing the toxic) closes the connections it held, as Toxiproxy's timeout toxic does
on cleanup; clients reconnect, as they would after a real partition killed their connections.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .errors import LabError, LabNotRunningError
from .processes import ProcessRef, free_ports, log_tail, spawn, stop_all

__all__ = [
    "RTT_PROFILES",
    "Link",
    "ProxyState",
    "RttProfile",
    "Toxiproxy",
    "parse_bandwidth",
    "parse_duration_ms",
    "require_proxy",
    "rtt_profile",
    "start_proxy",
    "stop_proxy",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(KB|MB|GB|kbit|Mbit|Gbit)/s\s*$", re.I)
_RATE_KB = {"kb": 1.0, "mb": 1000.0, "gb": 1_000_000.0, "kbit": 1 / 8, "mbit": 1000 / 8, "gbit": 1_000_000 / 8}


def parse_duration_ms(text: str, *, what: str = "duration") -> int:
    """``"80ms"`` -> 80, ``"0.25s"`` -> 250, ``"0"`` -> 0 (a bare number is milliseconds)."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"{what} {text!r} is not a duration: write it like 80ms or 0.2s")
    value = float(m.group(1)) * (1000.0 if m.group(2) == "s" else 1.0)
    return round(value)


def parse_bandwidth(text: str) -> int:
    """``"1MB/s"`` -> 1000 (Toxiproxy's unit, KB/s with KB = 1000 bytes); also kbit/s, Mbit/s, Gbit/s."""
    m = _RATE.match(text)
    if m is None:
        raise ValueError(f"bandwidth {text!r} is not a rate: write it like 500KB/s, 2MB/s or 10Mbit/s")
    kb = float(m.group(1)) * _RATE_KB[m.group(2).lower()]
    if kb < 1:
        raise ValueError(f"bandwidth {text!r} is below Toxiproxy's smallest rate, 1KB/s")
    return round(kb)


@dataclass(frozen=True)
class Link:
    """What stands between the lab's clients and one API server; ``Link()`` is a direct link."""

    rtt_ms: int = 0
    jitter_ms: int = 0
    #: per direction, in KB/s (KB = 1000 bytes); None is unlimited
    bandwidth_kbps: int | None = None
    partitioned: bool = False

    def __post_init__(self) -> None:
        if self.rtt_ms < 0 or self.jitter_ms < 0:
            raise ValueError("a round trip and its jitter cannot be negative")
        if self.jitter_ms > self.rtt_ms:
            raise ValueError(f"jitter {self.jitter_ms}ms is larger than the round trip {self.rtt_ms}ms:"
                             " give a smaller --jitter or a larger --rtt")
        if self.bandwidth_kbps is not None and self.bandwidth_kbps < 1:
            raise ValueError("bandwidth must be at least 1KB/s")

    @property
    def direct(self) -> bool:
        return self == Link()

    def toxics(self) -> dict[str, dict[str, Any]]:
        """The Toxiproxy toxics (by name) that make this link."""
        out: dict[str, dict[str, Any]] = {}
        halves = {"upstream": (self.rtt_ms // 2, self.jitter_ms // 2),
                  "downstream": (self.rtt_ms - self.rtt_ms // 2, self.jitter_ms - self.jitter_ms // 2)}
        for stream, (latency, jitter) in halves.items():
            if latency or jitter:
                out[f"rtt-{stream}"] = _toxic(f"rtt-{stream}", "latency", stream,
                                              {"latency": latency, "jitter": jitter})
            if self.bandwidth_kbps is not None:
                out[f"bandwidth-{stream}"] = _toxic(f"bandwidth-{stream}", "bandwidth", stream,
                                                    {"rate": self.bandwidth_kbps})
            if self.partitioned:
                out[f"partition-{stream}"] = _toxic(f"partition-{stream}", "timeout", stream, {"timeout": 0})
        return out

    @classmethod
    def from_toxics(cls, toxics: Sequence[Mapping[str, Any]]) -> Link:
        """Read a link back from the toxics Toxiproxy holds (ours, by name)."""
        by_name = {str(t["name"]): t.get("attributes", {}) for t in toxics}
        up, down = by_name.get("rtt-upstream", {}), by_name.get("rtt-downstream", {})
        rate = (by_name.get("bandwidth-downstream") or by_name.get("bandwidth-upstream") or {}).get("rate")
        return cls(
            rtt_ms=int(up.get("latency", 0)) + int(down.get("latency", 0)),
            jitter_ms=int(up.get("jitter", 0)) + int(down.get("jitter", 0)),
            bandwidth_kbps=int(rate) if rate is not None else None,
            partitioned="partition-upstream" in by_name or "partition-downstream" in by_name,
        )

    def __str__(self) -> str:
        if self.direct:
            return "direct"
        parts = []
        if self.rtt_ms:
            parts.append(f"rtt {self.rtt_ms}ms" + (f" ±{self.jitter_ms}ms" if self.jitter_ms else ""))
        if self.bandwidth_kbps is not None:
            parts.append(f"{self.bandwidth_kbps}KB/s")
        if self.partitioned:
            parts.append("partitioned")
        return ", ".join(parts)


def _toxic(name: str, kind: str, stream: str, attributes: dict[str, int]) -> dict[str, Any]:
    return {"name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes}


# ---------------------------------------------------------------------------------------- profiles

@dataclass(frozen=True)
class RttProfile:
    """Round trips from one region (where the clients are) to the regions of a fleet's clusters."""

    name: str
    origin: str
    source: str
    #: (region, round trip in ms); cluster i of the lab gets entry i (cycling past the end)
    regions: tuple[tuple[str, int], ...]

    def rtt_ms(self, index: int) -> int:
        return self.regions[index % len(self.regions)][1]

    def region(self, index: int) -> str:
        return self.regions[index % len(self.regions)][0]


_AZURE_SOURCE = ("Microsoft, 'Azure network round-trip latency statistics', P95 over the 30 days ending"
                 " 2026-07-30, https://learn.microsoft.com/azure/networking/azure-network-latency")

RTT_PROFILES: dict[str, RttProfile] = {
    p.name: p for p in (
        RttProfile(
            name="azure-east-us", origin="East US", source=_AZURE_SOURCE,
            regions=(("Canada Central", 21), ("Central US", 35), ("West US 2", 76), ("North Europe", 76),
                     ("UK South", 80), ("West Europe", 91), ("Brazil South", 121), ("Japan East", 165),
                     ("Australia East", 206), ("Southeast Asia", 229)),
        ),
        RttProfile(
            name="azure-west-europe", origin="West Europe", source=_AZURE_SOURCE,
            regions=(("France Central", 15), ("North Europe", 19), ("Sweden Central", 31),
                     ("Israel Central", 66), ("East US", 89), ("Central US", 118), ("Central India", 153),
                     ("South Africa North", 171), ("Brazil South", 191), ("Japan East", 242)),
        ),
    )
}


def rtt_profile(name: str) -> RttProfile:
    try:
        return RTT_PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(RTT_PROFILES))
        raise LabError(f"no RTT profile {name!r}: use one of {known}") from None


# ---------------------------------------------------------------------------------------- process

STATE_FILE = "toxiproxy.json"


@dataclass(frozen=True)
class ProxyState:
    """The lab's Toxiproxy: its process, its API port and each cluster's listen port."""

    api_port: int
    process: ProcessRef
    listen: Mapping[str, int]

    def server(self, cluster: str) -> str:
        return f"https://127.0.0.1:{self.listen[cluster]}"

    def to_json(self) -> dict[str, object]:
        return {"api_port": self.api_port, "process": self.process.to_json(), "listen": dict(self.listen)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ProxyState:
        return cls(api_port=int(raw["api_port"]), process=ProcessRef.from_json(raw["process"]),
                   listen={str(k): int(v) for k, v in raw["listen"].items()})

    @classmethod
    def load(cls, state_dir: Path) -> ProxyState | None:
        try:
            return cls.from_json(json.loads((state_dir / STATE_FILE).read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None


def start_proxy(state_dir: Path, upstreams: Mapping[str, int], exe: Path, *, timeout: float = 20.0) -> ProxyState:
    """Start Toxiproxy with one proxy per cluster (``name -> API server port``); returns its state."""
    ports = free_ports(1 + len(upstreams))
    api_port, listen = ports[0], dict(zip(upstreams, ports[1:], strict=True))
    config = state_dir / "toxiproxy-config.json"
    config.write_text(json.dumps([
        {"name": name, "listen": f"127.0.0.1:{listen[name]}", "upstream": f"127.0.0.1:{port}", "enabled": True}
        for name, port in upstreams.items()], indent=2) + "\n")
    log = state_dir / "toxiproxy.log"
    proc, ref = spawn([str(exe), "-host", "127.0.0.1", "-port", str(api_port), "-config", str(config)],
                      log=log, cwd=state_dir, env=_env())
    state = ProxyState(api_port=api_port, process=ref, listen=listen)
    (state_dir / STATE_FILE).write_text(json.dumps(state.to_json(), indent=2) + "\n")
    deadline = time.monotonic() + timeout
    with Toxiproxy(api_port) as api:
        while True:
            if proc.poll() is not None:
                raise LabError(f"toxiproxy exited with code {proc.returncode} (log: {log}):\n{log_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if set(api.proxies()) >= set(upstreams):
                    return state
            if time.monotonic() > deadline:
                stop_all([ref], grace=1.0, popens=[proc])
                raise LabError(f"toxiproxy did not answer on 127.0.0.1:{api_port} within {timeout:.0f}s"
                               f" (log: {log}):\n{log_tail(log)}")
            time.sleep(0.05)


def stop_proxy(state_dir: Path, *, grace: float = 2.0) -> None:
    """Stop the lab's Toxiproxy if one was started, and forget it."""
    state = ProxyState.load(state_dir)
    if state is not None:
        stop_all([state.process], grace=grace)
    (state_dir / STATE_FILE).unlink(missing_ok=True)


def _env() -> dict[str, str]:
    # Toxiproxy logs every connection (at info, and every close at warn); at error it only proxies.
    return dict(os.environ, LOG_LEVEL="error")


# ---------------------------------------------------------------------------------------- API client

class Toxiproxy:
    """``with Toxiproxy(port) as api: api.set_link("c1", Link(rtt_ms=80))`` (Toxiproxy's HTTP API)."""

    def __init__(self, api_port: int, *, timeout: float = 5.0) -> None:
        self._client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=timeout,
                                    headers={"User-Agent": "isthmus-lab"})

    def __enter__(self) -> Toxiproxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def proxies(self) -> dict[str, Any]:
        r = self._client.get("/proxies")
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        r = self._client.get(f"/proxies/{proxy}/toxics")
        r.raise_for_status()
        out: list[dict[str, Any]] = r.json()
        return out

    def link(self, proxy: str) -> Link:
        return Link.from_toxics(self.toxics(proxy))

    def set_link(self, proxy: str, link: Link) -> None:
        """Make the proxy's toxics exactly ``link``'s: update those that stay, drop and add the rest."""
        want = link.toxics()
        have = {str(t["name"]): t for t in self.toxics(proxy)}
        for name in have.keys() - want.keys():
            self._client.delete(f"/proxies/{proxy}/toxics/{name}").raise_for_status()
        for name, toxic in want.items():
            if name in have and have[name].get("type") == toxic["type"]:
                self._client.patch(f"/proxies/{proxy}/toxics/{name}",
                                   json={"attributes": toxic["attributes"]}).raise_for_status()
            else:
                if name in have:
                    self._client.delete(f"/proxies/{proxy}/toxics/{name}").raise_for_status()
                self._client.post(f"/proxies/{proxy}/toxics", json=toxic).raise_for_status()


def require_proxy(state_dir: Path, lab: str) -> ProxyState:
    state = ProxyState.load(state_dir)
    if state is None or not state.process.alive():
        raise LabNotRunningError(
            f"lab {lab!r} runs without the latency proxy: start it with `isthmus lab up --proxy`"
            " (or `--rtt-profile NAME`) to put Toxiproxy between clients and its API servers")
    return state
