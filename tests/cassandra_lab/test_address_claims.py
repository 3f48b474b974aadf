"""Loopback address blocks: two claims never share a block, and busy addresses are skipped."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from isthmus.lab.cassandra import claim_addresses


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_LAB_LOCK_DIR", str(tmp_path / "locks"))


def test_two_claims_get_different_blocks_until_released() -> None:
    with claim_addresses(2, ports=(19042,), first_block=200) as first:
        assert first.addresses == ("127.0.200.1", "127.0.200.2")
        with claim_addresses(1, ports=(19042,), first_block=200) as second:
            assert second.addresses == ("127.0.201.1",)
    with claim_addresses(1, ports=(19042,), first_block=200) as again:
        assert again.addresses == ("127.0.200.1",)


def test_a_block_where_something_listens_is_skipped() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.210.1", 19042))
        busy.listen()
        with claim_addresses(1, ports=(19042,), first_block=210) as claim:
            assert claim.addresses == ("127.0.211.1",)
