"""A real Prometheus server for the lab: Debian's ``/usr/bin/prometheus``, run by us on loopback.

Owns: rendering a scrape configuration from :class:`ScrapeJob` values (1 s interval by
default), starting the binary on a free ``127.0.0.1`` port with its own storage folder and
``--web.enable-lifecycle``, waiting for ``/-/ready``, changing its jobs at run time
(rewrite the file, ``POST /-/reload``), querying ``/api/v1/query`` into :class:`Sample`
values, and stopping it (SIGTERM, then SIGKILL). Every HTTP call has a time-out.
Must not: touch the distribution's ``prometheus`` service or ``/etc/prometheus``; install
packages (``scripts/install-prereqs.sh`` does).

::

    with start_prometheus(data_dir=tmp, jobs=[ScrapeJob("app", ("127.0.0.1:8000",))]) as prom:
        samples = prom.wait_for("up{job='app'} == 1")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from isthmus.lab.errors import LabError

from .processes import free_ports

__all__ = [
    "PrometheusLabError",
    "PrometheusServer",
    "Sample",
    "ScrapeJob",
    "find_prometheus",
    "query",
    "render_prometheus_config",
    "start_prometheus",
]

DEFAULT_BINARY = Path("/usr/bin/prometheus")
_HTTP_TIMEOUT_S = 5.0


class PrometheusLabError(LabError):
    """The lab's Prometheus is missing, did not start, rejected its config or a query failed."""


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job: a name and ``host:port`` targets on this machine."""

    name: str
    targets: tuple[str, ...]
    metrics_path: str = "/metrics"
    labels: tuple[tuple[str, str], ...] = ()
    scrape_interval_s: float | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "_").replace(".", "_").isidentifier():
            raise ValueError(f"scrape job name {self.name!r} must be a simple word")
        for target in self.targets:
            host, _, port = target.rpartition(":")
            if not port.isdigit() or not host:
                raise ValueError(f"scrape target {target!r} must be host:port")

    def to_config(self) -> dict[str, Any]:
        static: dict[str, Any] = {"targets": list(self.targets)}
        if self.labels:
            static["labels"] = dict(self.labels)
        job: dict[str, Any] = {
            "job_name": self.name,
            "metrics_path": self.metrics_path,
            "static_configs": [static],
        }
        if self.scrape_interval_s is not None:
            job["scrape_interval"] = _duration(self.scrape_interval_s)
            job["scrape_timeout"] = _duration(self.scrape_interval_s)
        return job


@dataclass(frozen=True)
class Sample:
    """One value of an instant query: its labels (``__name__`` included), value and time."""

    labels: tuple[tuple[str, str], ...]
    value: float
    timestamp: float

    @property
    def metric(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def name(self) -> str | None:
        return self.metric.get("__name__")


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def render_prometheus_config(jobs: Iterable[ScrapeJob], *, scrape_interval_s: float = 1.0) -> str:
    """A ``prometheus.yml`` scraping ``jobs`` (pure)."""
    jobs = list(jobs)
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"scrape job names must be unique: {names}")
    interval = _duration(scrape_interval_s)
    doc = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [j.to_config() for j in jobs],
    }
    return "# Rendered by isthmus.lab.prometheus.\n" + yaml.safe_dump(doc, sort_keys=False)


def _samples(data: Mapping[str, Any]) -> list[Sample]:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "vector":
        return [
            Sample(tuple(sorted(r["metric"].items())), float(r["value"][1]), float(r["value"][0]))
            for r in result or []
        ]
    if kind in ("scalar", "string") and isinstance(result, list):
        return [Sample((), float(result[1]), float(result[0]))]
    if kind == "matrix":
        return [
            Sample(tuple(sorted(r["metric"].items())), float(v), float(t))
            for r in result or []
            for t, v in r["values"]
        ]
    raise PrometheusLabError(f"unexpected Prometheus result type {kind!r}")


def query(base_url: str, expr: str, *, timeout: float = _HTTP_TIMEOUT_S) -> list[Sample]:
    """Run an instant query against ``base_url`` (``http://127.0.0.1:PORT``) and return its samples."""
    try:
        response = httpx.get(f"{base_url}/api/v1/query", params={"query": expr}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise PrometheusLabError(f"Prometheus at {base_url} did not answer query {expr!r}: {exc}") from exc
    try:
        body = response.json()
    except ValueError as exc:
        raise PrometheusLabError(
            f"Prometheus at {base_url} answered {response.status_code} with no JSON to {expr!r}"
        ) from exc
    if body.get("status") != "success":
        raise PrometheusLabError(
            f"Prometheus rejected {expr!r}: {body.get('errorType')}: {body.get('error')}"
        )
    return _samples(body["data"])


def find_prometheus() -> Path:
    """Debian's ``/usr/bin/prometheus`` or one on PATH; a clear error naming the fix otherwise."""
    for candidate in (str(DEFAULT_BINARY), shutil.which("prometheus")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise PrometheusLabError(
        "the prometheus server binary is missing: run `scripts/install-prereqs.sh`"
        " (or `apt-get install -y prometheus`)."
    )




@dataclass
class PrometheusServer:
    """A running Prometheus we started; change its jobs with :meth:`add_job` / :meth:`remove_job`."""

    process: subprocess.Popen[bytes]
    port: int
    config_path: Path
    storage_dir: Path
    log_path: Path
    scrape_interval_s: float
    jobs: tuple[ScrapeJob, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def query(self, expr: str, *, timeout: float = _HTTP_TIMEOUT_S) -> list[Sample]:
        return query(self.url, expr, timeout=timeout)

    def wait_for(
        self,
        expr: str,
        *,
        timeout: float = 30.0,
        until: Callable[[list[Sample]], bool] = bool,
    ) -> list[Sample]:
        """Poll ``expr`` until ``until(samples)`` holds (default: any sample); raise on time-out."""
        deadline = time.monotonic() + timeout
        samples: list[Sample] = []
        while time.monotonic() < deadline:
            samples = self.query(expr)
            if until(samples):
                return samples
            time.sleep(0.25)
        raise PrometheusLabError(
            f"{expr!r} did not hold within {timeout:.0f}s at {self.url}; last: {samples}"
        )

    def set_jobs(self, jobs: Sequence[ScrapeJob]) -> None:
        """Replace every scrape job and reload; raises if Prometheus rejects the new config."""
        with self._lock:
            text = render_prometheus_config(jobs, scrape_interval_s=self.scrape_interval_s)
            previous = self.config_path.read_text()
            self.config_path.write_text(text)
            try:
                response = httpx.post(f"{self.url}/-/reload", timeout=30.0)
            except httpx.HTTPError as exc:
                self.config_path.write_text(previous)
                raise PrometheusLabError(f"Prometheus at {self.url} did not answer /-/reload: {exc}") from exc
            if response.status_code != 200:
                self.config_path.write_text(previous)
                raise PrometheusLabError(
                    f"Prometheus rejected its new config ({response.status_code}): {response.text.strip()}"
                )
            self.jobs = tuple(jobs)

    def add_job(self, job: ScrapeJob) -> None:
        self.set_jobs([*(j for j in self.jobs if j.name != job.name), job])

    def remove_job(self, name: str) -> None:
        self.set_jobs([j for j in self.jobs if j.name != name])

    @contextlib.contextmanager
    def scraping(self, job: ScrapeJob) -> Iterator[ScrapeJob]:
        """Scrape ``job`` inside the ``with`` block only."""
        self.add_job(job)
        try:
            yield job
        finally:
            if self.alive():
                self.remove_job(job.name)

    def stop(self, *, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10.0)


def _wait_ready(server: PrometheusServer, timeout: float) -> bool:
    """True once ``/-/ready`` says 200; False if the process died (e.g. its port was taken)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            return False
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/-/ready", timeout=2.0).status_code == 200:
                return True
        time.sleep(0.2)
    server.stop()
    raise PrometheusLabError(
        f"Prometheus on {server.url} was not ready within {timeout:.0f}s (log: {server.log_path}):\n"
        f"{server.log_tail()}"
    )


def start_prometheus(
    *,
    data_dir: Path,
    jobs: Iterable[ScrapeJob] = (),
    port: int | None = None,
    scrape_interval_s: float = 1.0,
    binary: Path | None = None,
    timeout: float = 60.0,
) -> PrometheusServer:
    """Start Prometheus on ``127.0.0.1`` (a free port unless ``port``) and wait for ``/-/ready``.

    ``data_dir`` receives ``prometheus.yml``, ``tsdb/`` and ``prometheus.log``.
    """
    exe = binary or find_prometheus()
    jobs = tuple(jobs)
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "prometheus.yml"
    config.write_text(render_prometheus_config(jobs, scrape_interval_s=scrape_interval_s))
    log = data_dir / "prometheus.log"
    for _attempt in range(3):
        chosen = port or free_ports(1)[0]
        argv = [
            str(exe),
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address=127.0.0.1:{chosen}",
            f"--web.external-url=http://127.0.0.1:{chosen}/",
            "--web.enable-lifecycle",
            "--log.level=info",
        ]
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir,
                start_new_session=True, close_fds=True,
            )
        server = PrometheusServer(
            process=process, port=chosen, config_path=config, storage_dir=data_dir / "tsdb", log_path=log,
            scrape_interval_s=scrape_interval_s, jobs=jobs,
        )
        if _wait_ready(server, timeout):
            return server
        if port is not None:
            break
    raise PrometheusLabError(
        f"Prometheus exited while starting (log: {log}); is the port free?"
        f" Last log lines:\n{server.log_tail()}"
    )
