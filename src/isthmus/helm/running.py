"""The ``helm`` binary: where it is (``$ISTHMUS_HELM``, else ``helm`` on PATH), which version, ``template``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["HELM_ENV", "MIN_VERSION", "HelmBinary", "HelmError", "HelmMissing", "TemplateRequest", "chart_problem",
           "find_helm", "parse_version", "template"]

HELM_ENV = "ISTHMUS_HELM"
MIN_VERSION = (3, 8, 0)
"""``helm template --kube-version`` and ``--api-versions`` with OCI-era dependency handling: Helm 3.8 or later
(Helm 4 too)."""

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_TEMPLATE_TIMEOUT = 120.0
_REAP_TIMEOUT = 10.0


class HelmError(UserError):
    """Helm refused a chart (not a chart, values its schema rejects, a template error): its own words."""

    def __init__(self, message: str, *, chart: str = "", cluster: str = "", helm_says: str = "") -> None:
        self.chart, self.cluster, self.helm_says = chart, cluster, helm_says
        where = ", ".join(p for p in (f"chart {chart}" if chart else "", f"cluster {cluster}" if cluster else "") if p)
        said = f": helm says: {helm_says}" if helm_says else ""
        super().__init__(f"{where}: {message}{said}" if where else f"{message}{said}")


class HelmMissing(HelmError):
    """No usable ``helm``: not found, not runnable, or older than :data:`MIN_VERSION`."""


def parse_version(text: str) -> tuple[int, int, int] | None:
    found = _VERSION.search(text)
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


@dataclass(frozen=True)
class HelmBinary:
    path: Path
    version: str


def find_helm(setting: str | os.PathLike[str] | None = None) -> HelmBinary:
    """The ``helm`` to run: ``setting``, else ``$ISTHMUS_HELM``, else ``helm`` on PATH; checked by ``helm version``."""
    wanted = str(setting) if setting else os.environ.get(HELM_ENV) or ""
    how = f"{HELM_ENV}={wanted}" if wanted and not setting else (wanted or "helm on PATH")
    located = shutil.which(wanted) if wanted else shutil.which("helm")
    fix = (f"install Helm {'.'.join(map(str, MIN_VERSION))} or later and put it on PATH, or point {HELM_ENV} at it "
           "(`make helm` builds one into ~/.cache/isthmus/tools)")
    if located is None:
        raise HelmMissing(f"no helm binary found ({how}); {fix}")
    try:
        done = subprocess.run([located, "version", "--template", "{{.Version}}"], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HelmMissing(f"cannot run {located} ({exc}); {fix}") from exc
    version = parse_version(done.stdout)
    if done.returncode != 0 or version is None:
        raise HelmMissing(f"{located} is not a working helm (`helm version` said {done.stdout.strip()!r}); {fix}",
                          helm_says=done.stderr.strip())
    if version < MIN_VERSION:
        raise HelmMissing(f"{located} is Helm {done.stdout.strip()}, older than "
                          f"{'.'.join(map(str, MIN_VERSION))}; {fix}")
    return HelmBinary(Path(located), done.stdout.strip())


@dataclass(frozen=True, kw_only=True)
class TemplateRequest:
    """One ``helm template`` run: a chart for one cluster."""

    chart: str
    release: str
    namespace: str
    cluster: str
    values: Mapping[str, Any] = field(default_factory=dict)
    kube_version: str = ""
    api_versions: Sequence[str] = ()
    time_limit: float = _TEMPLATE_TIMEOUT
    """Seconds helm may take."""

    def argv(self, helm: HelmBinary, values_file: Path) -> list[str]:
        args = [str(helm.path), "template", self.release, self.chart, "--namespace", self.namespace,
                "--values", str(values_file), "--include-crds", "--skip-tests"]
        if self.kube_version:
            args += ["--kube-version", self.kube_version]
        for api in self.api_versions:
            args += ["--api-versions", api]
        return args


def _helm_words(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    lines = [ln.removeprefix("Error: ") for ln in lines]
    return " ".join(lines)[:2000]


def chart_problem(chart: Path) -> str | None:
    """What is wrong with ``chart`` as a chart to render (None: a folder with ``Chart.yaml``, or an archive)."""
    if not chart.exists():
        return f"chart {chart} does not exist; give a chart folder (with Chart.yaml) or a .tgz"
    if chart.is_dir() and not (chart / "Chart.yaml").is_file():
        return f"{chart} is not a Helm chart (it has no Chart.yaml); give a chart folder or a .tgz"
    return None


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill ``proc`` and wait for its end, reading its pipes to their end: once a cancelled ``communicate`` stops
    reading, a pipe whose buffer is full is paused, never sees its end, and ``proc.wait()`` alone never returns."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_REAP_TIMEOUT):
            await proc.communicate()


async def template(helm: HelmBinary, request: TemplateRequest) -> str:
    """``helm template`` of ``request``: the rendered YAML, or :class:`HelmError` with Helm's words."""
    chart = Path(request.chart)
    timeout = request.time_limit
    if not await asyncio.to_thread(chart.exists):
        raise HelmError("no such chart folder or archive; check spec.chart", chart=request.chart,
                        cluster=request.cluster)
    with tempfile.TemporaryDirectory(prefix="isthmus-helm-") as tmp:
        values_file = Path(tmp) / "values.json"
        values_file.write_text(json.dumps(dict(request.values)))  # JSON is YAML: Helm reads it as a values file
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
        # Helm needs no cluster for `template`: keep it from reading the user's kubeconfig or caches.
        env |= {"HELM_CACHE_HOME": str(Path(tmp) / "cache"), "HELM_CONFIG_HOME": str(Path(tmp) / "config"),
                "HELM_DATA_HOME": str(Path(tmp) / "data"), "KUBECONFIG": str(Path(tmp) / "no-kubeconfig")}
        proc = await asyncio.create_subprocess_exec(*request.argv(helm, values_file), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=env)
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError as exc:
            await _reap(proc)
            raise HelmError(f"helm template did not finish within {timeout:g}s", chart=request.chart,
                            cluster=request.cluster) from exc
        except BaseException:  # cancelled (another cluster's render failed): leave no helm behind
            await asyncio.shield(_reap(proc))
            raise
    if proc.returncode != 0:
        raise HelmError("helm template failed", chart=request.chart, cluster=request.cluster,
                        helm_says=_helm_words(err.decode(errors="replace")))
    return out.decode()
