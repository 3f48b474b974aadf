"""The network picture is drawn from the plan alone."""

from __future__ import annotations

from pathlib import Path

from isthmus.pictures.netmap import draw_network, link_label

from ._mesh import example, planned


def test_draws_a_png(tmp_path: Path) -> None:
    plan = planned(example()[0])
    out = draw_network(plan, tmp_path / "net.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert link_label(plan) == f"VXLAN + WireGuard, MTU {plan.mesh_mtu.route_mtu}"
