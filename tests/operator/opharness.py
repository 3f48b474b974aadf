"""Running ``isthmus operator run`` as a real process against the lab, and reading what it wrote."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from isthmus.lab import Lab
from isthmus.lab.processes import free_ports

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
NAMESPACE = "isthmus-system"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
T = TypeVar("T")




class OperatorProcess:
    """One replica; its log goes to a file so a failing test can show it."""

    def __init__(self, lab: Lab, identity: str, log_dir: Path, *extra: str) -> None:
        self.lab, self.identity = lab, identity
        self.port = free_ports(1)[0]
        self.log = log_dir / f"operator-{identity}.log"
        self.argv = [ISTHMUS, "operator", "run", "--kubeconfig", str(lab.kubeconfig), "--context", lab.context("c1"),
                     "--namespace", NAMESPACE, "--metrics-port", str(self.port), "--id", identity,
                     "--resync", "300", "--status-interval", "2", "--probe-interval", "2", "--request-timeout", "3",
                     "--lease-duration", "6", *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: self.get("/readyz").startswith("ready"), 30, f"{self.identity} ready", self)
        return self

    def get(self, path: str) -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2).text
        except httpx.HTTPError:
            return ""

    @property
    def leading(self) -> bool:
        return "leader" in self.get("/readyz")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_for(check: Callable[[], T], timeout: float, what: str, *ops: OperatorProcess,
             interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    value = check()
    while not value:
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {op.identity}:\n{op.tail()}" for op in ops)
            raise AssertionError(f"{what}: not within {timeout:.0f}s; last value {value!r}\n{logs}")
        time.sleep(interval)
        value = check()
    return value


def apply_doc(lab: Lab, cluster: str, doc: dict[str, Any], *args: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(doc, f)
    try:
        return lab.kubectl(cluster, "apply", "--server-side", "-f", f.name, *args)
    finally:
        Path(f.name).unlink()


def member_kubeconfig(lab: Lab, cluster: str, *, variant: str = "") -> str:
    """A self-contained kubeconfig for one lab context; ``variant`` renames user and context (fresh text)."""
    doc = yaml.safe_load(lab.kubectl(cluster, "config", "view", "--minify", "--flatten", "--raw"))
    if variant:
        for user in doc["users"]:
            user["name"] += f"-{variant}"
        for ctx in doc["contexts"]:
            ctx["name"] += f"-{variant}"
            ctx["context"]["user"] += f"-{variant}"
        doc["current-context"] += f"-{variant}"
    return str(yaml.safe_dump(doc))


def register_member(lab: Lab, cluster: str, *, variant: str = "") -> None:
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": f"member-{cluster}", "namespace": NAMESPACE,
                           "labels": {"isthmus.dev/cluster": cluster}},
              "stringData": {"kubeconfig": member_kubeconfig(lab, cluster, variant=variant)}}
    apply_doc(lab, "c1", secret, "--force-conflicts")


def cassandra(lab: Lab, namespace: str, name: str) -> dict[str, Any]:
    out = lab.kubectl("c1", "get", "cassandracluster", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out) if out.strip() else {}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def member_condition(obj: dict[str, Any], member: str) -> dict[str, Any]:
    for m in (obj.get("status") or {}).get("members", []):
        if m["name"] == member:
            return next((c for c in m["conditions"] if c["type"] == "Reachable"), {})
    return {}


def converged(obj: dict[str, Any]) -> bool:
    """Ready, and the status describes the object's current generation."""
    status = obj.get("status") or {}
    return (condition(obj, "Ready").get("status") == "True"
            and status.get("observedGeneration") == obj["metadata"]["generation"])


def statefulsets(lab: Lab, cluster: str, namespace: str, app: str) -> dict[str, str]:
    """StatefulSet name -> content hash, of ``app`` in one member."""
    out = lab.kubectl(cluster, "get", "statefulsets", "-n", namespace, "-l", f"isthmus.dev/app={app}", "-o", "json",
                      timeout=10)
    return {i["metadata"]["name"]: i["metadata"].get("annotations", {}).get("isthmus.dev/content-hash", "")
            for i in json.loads(out)["items"]}


def events(lab: Lab, namespace: str, name: str) -> list[dict[str, Any]]:
    out = lab.kubectl("c1", "get", "events", "-n", namespace, "--field-selector",
                      f"involvedObject.kind=CassandraCluster,involvedObject.name={name}", "-o", "json")
    return list(json.loads(out)["items"])


def until(lab: Lab, namespace: str, name: str, check: Callable[[dict[str, Any]], bool], timeout: float, what: str,
          *ops: OperatorProcess) -> dict[str, Any]:
    """The CassandraCluster once ``check`` holds for it."""
    found: list[dict[str, Any]] = []

    def probe() -> bool:
        obj = cassandra(lab, namespace, name)
        if obj and check(obj):
            found.append(obj)
            return True
        return False

    wait_for(probe, timeout, what, *ops)
    return found[-1]
