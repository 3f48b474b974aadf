"""Resolving Apache Cassandra's server jars with Maven, and finding a Java 17 to run them.

Owns: the pinned Cassandra version, running ``mvn dependency:copy-dependencies`` on the
``maven/pom.xml`` shipped beside this module into ``~/.cache/isthmus/cassandra/<version>/lib``,
the completeness marker written after a successful copy, a lock so that two test sessions never
resolve into the same folder at once, and :class:`CassandraLabError`.
Must not: start Cassandra (that is :mod:`isthmus.lab.cassandra`).

Why Maven and not the binary tarball: the only registries this project may reach are package
registries; ``org.apache.cassandra:cassandra-all`` on Maven Central plus its runtime
dependencies is exactly the tarball's ``lib/`` folder.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from isthmus.lab.errors import LabError

__all__ = [
    "CASSANDRA_VERSION",
    "CassandraLabError",
    "cassandra_cache_dir",
    "ensure_cassandra",
    "find_java",
    "jamm_jar",
]

#: Newest 5.0.x on Maven Central when this was written (5.0.10 was not published yet).
CASSANDRA_VERSION = "5.0.9"

POM = Path(__file__).parent / "maven" / "pom.xml"
MARKER = ".isthmus-complete"
_MAVEN_TIMEOUT_S = 1800.0
_JAVA_MAJOR = 17
_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')


class CassandraLabError(LabError):
    """A lab Cassandra could not be provisioned, started or reached; the message says how to fix it.

    A :class:`isthmus.lab.errors.LabError` (and so a ``RuntimeError``): the CLI prints it as one
    paragraph and exits with code 2.
    """


def cassandra_cache_dir(version: str = CASSANDRA_VERSION, *, cache_root: Path | None = None) -> Path:
    """``~/.cache/isthmus/cassandra/<version>`` (honours ``XDG_CACHE_HOME``)."""
    if cache_root is None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache_root = Path(base) / "isthmus" / "cassandra"
    return cache_root / version


def _complete(lib: Path) -> bool:
    """True when ``lib`` holds the marker and every jar that the marker lists."""
    marker = lib / MARKER
    if not marker.is_file():
        return False
    names = [n for n in marker.read_text().splitlines() if n]
    return bool(names) and all((lib / n).is_file() for n in names)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_cassandra(version: str = CASSANDRA_VERSION, *, cache_root: Path | None = None) -> Path:
    """Return the folder of Cassandra ``version``'s jars, resolving them with Maven if needed.

    Maven runs only when the folder is missing or incomplete; the jars are copied into a
    sibling folder first and renamed into place, so an interrupted run never looks complete.
    """
    home = cassandra_cache_dir(version, cache_root=cache_root)
    lib = home / "lib"
    if _complete(lib):
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise CassandraLabError(
            "Maven (`mvn`) is not on PATH: it is needed once to fetch Cassandra's jars from Maven"
            " Central. Run `scripts/install-prereqs.sh` (or `apt-get install -y maven`) and retry."
        )
    find_java()  # fail early and clearly: jars without a Java 17 are of no use
    with _locked(home / ".lock"):
        if _complete(lib):
            return lib
        partial = home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        argv = [
            mvn, "-B", "-q", "-f", str(POM),
            f"-Dcassandra.version={version}",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
            "dependency:copy-dependencies",
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=_MAVEN_TIMEOUT_S, check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise CassandraLabError(
                f"Maven did not finish resolving cassandra-all {version} within {_MAVEN_TIMEOUT_S:.0f}s;"
                " check access to Maven Central and retry."
            ) from exc
        jars = sorted(p.name for p in partial.glob("*.jar")) if partial.is_dir() else []
        if done.returncode != 0 or not any(n.startswith("cassandra-all-") for n in jars):
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise CassandraLabError(
                f"Maven failed to resolve org.apache.cassandra:cassandra-all:{version}"
                f" (exit {done.returncode}); is the version published on Maven Central?\n{tail}"
            )
        (partial / MARKER).write_text("\n".join(jars) + "\n")
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)
    return lib


def jamm_jar(lib: Path) -> Path:
    """The jamm agent jar in ``lib`` (Cassandra measures object sizes with it; it must be a -javaagent)."""
    found = sorted(lib.glob("jamm-*.jar"))
    if not found:
        raise CassandraLabError(f"no jamm-*.jar in {lib}; delete {lib} and let the lab resolve it again.")
    return found[-1]


@functools.cache
def _java_major(java: str) -> int | None:
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_RE.search(done.stderr + done.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java() -> Path:
    """A Java 17 binary: ``$JAVA_HOME/bin/java``, ``java`` on PATH, or Debian's openjdk-17."""
    candidates: list[str] = []
    if home := os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(home) / "bin" / "java"))
    if on_path := shutil.which("java"):
        candidates.append(on_path)
    candidates += sorted(str(p) for p in Path("/usr/lib/jvm").glob("*-17-*/bin/java"))
    seen: list[str] = []
    for candidate in candidates:
        if candidate in seen or not os.access(candidate, os.X_OK):
            continue
        seen.append(candidate)
        if _java_major(candidate) == _JAVA_MAJOR:
            return Path(candidate)
    found = ", ".join(seen) or "none"
    raise CassandraLabError(
        f"Cassandra 5.0 in the lab needs Java {_JAVA_MAJOR} (java binaries found: {found}). Run"
        " `scripts/install-prereqs.sh` (or `apt-get install -y openjdk-17-jdk-headless`), or set JAVA_HOME."
    )
