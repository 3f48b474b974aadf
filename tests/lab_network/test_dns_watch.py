"""The DNS's object watch against a stand-in API (httpx MockTransport): list, watch events, a missing CRD."""

from __future__ import annotations

import json
import threading
import time

import httpx

from isthmus.lab.dnsserver import SERVICE_EXPORTS, ObjectWatch


def _export(name: str) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "app"}}


def test_a_missing_crd_is_no_exports_until_it_appears_then_events_apply() -> None:
    crd_installed = threading.Event()
    changes: list[int] = []
    stored = [_export("a")]  # what the stand-in API server holds

    def handler(request: httpx.Request) -> httpx.Response:
        if not crd_installed.is_set():
            return httpx.Response(404, json={"kind": "Status", "code": 404})
        if request.url.params.get("watch") == "1":
            events = [{"type": "ADDED", "object": _export("b")}, {"type": "DELETED", "object": _export("a")},
                      {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}]
            stored[:] = [_export("b")]
            return httpx.Response(200, content="".join(json.dumps(e) + "\n" for e in events).encode())
        return httpx.Response(200, json={"metadata": {"resourceVersion": "7"}, "items": list(stored)})

    stop = threading.Event()
    client = httpx.Client(base_url="https://api.invalid", transport=httpx.MockTransport(handler))
    watch = ObjectWatch(client, SERVICE_EXPORTS, lambda: changes.append(1), stop)
    watch.start()
    try:
        assert watch.synced.wait(5.0)
        assert watch.items() == []
        crd_installed.set()
        deadline = time.monotonic() + 10.0  # the watch retries a missing CRD every few seconds
        while [i["metadata"]["name"] for i in watch.items()] != ["b"]:
            assert time.monotonic() < deadline, watch.items()
            time.sleep(0.02)
        assert changes
    finally:
        stop.set()
        client.close()
