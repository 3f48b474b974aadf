"""The lab's images: what a container of ``cassandra:<version>`` or of the Isthmus image sees in its root.

Owns: the ``cassandra:<version>`` image as the lab builds it (the official image's layout:
``/opt/cassandra/bin/{cassandra,nodetool}``, ``/opt/cassandra/lib`` = the jars Maven resolved,
``/etc/cassandra`` with the JVM options, logback and rack files, ``CASSANDRA_HOME``, ``CASSANDRA_CONF``,
``PATH`` and the ``cassandra`` user, uid 999), and the Isthmus image (the ``isthmus`` command of this
installation, for the guard sidecar). Must not: start processes (beyond resolving jars with Maven).

Why scripts of our own for ``cassandra`` and ``nodetool``: Maven Central carries Cassandra's jars, not
the tarball's ``bin/``. The scripts do what the tarball's do for a foreground node on Java 17: read
``jvm-server.options`` and ``jvm17-server.options`` from ``$CASSANDRA_CONF``, size the heap from
``MAX_HEAP_SIZE``, open JMX on ``127.0.0.1:7199`` and run ``CassandraDaemon`` with the configuration folder
first on the classpath (``cassandra-rackdc.properties`` and ``logback.xml`` are read from there).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..cassandra import JVM17_SERVER_OPTIONS, JVM_SERVER_OPTIONS, LAB_SYSTEM_PROPERTIES
from ..cassandra_config import render_logback_xml
from ..cassandra_install import CassandraLabError, ensure_cassandra, find_java, jamm_jar

__all__ = ["CASSANDRA_UID", "NODETOOL_SOCKET", "ImageLayer", "cassandra_image", "isthmus_image"]

CASSANDRA_UID = 999
#: The lab caps every node's heap at this many MiB (2 cores, 24 GiB, up to 6 nodes): said in events and logs.
DEFAULT_HEAP_CAP_MIB = 1024


@dataclass(frozen=True)
class ImageLayer:
    """What an image adds to a container: a folder laid over the root, host folders bound in, environment."""

    dir: Path | None
    binds: tuple[tuple[Path, str], ...] = ()
    env: dict[str, str] = field(default_factory=dict)




_CASSANDRA = """#!/bin/sh
# cassandra for the Isthmus lab's cassandra:{version} image: a foreground node (-f) as the tarball's
# bin/cassandra starts one on Java 17. The heap comes from MAX_HEAP_SIZE; the lab caps it at {cap}M.
set -e
CASSANDRA_HOME=${{CASSANDRA_HOME:-/opt/cassandra}}
CASSANDRA_CONF=${{CASSANDRA_CONF:-/etc/cassandra}}
foreground=no
for arg in "$@"; do [ "$arg" = "-f" ] && foreground=yes; done
if [ "$foreground" != yes ]; then
  echo "cassandra: the lab image runs nodes in the foreground only: use 'cassandra -f'" >&2
  exit 2
fi
heap=${{MAX_HEAP_SIZE:-1G}}
mib=$(printf '%s' "$heap" | awk '/^[0-9]+[mM]$/ {{print int($0)}} /^[0-9]+[gG]$/ {{print int($0)*1024}}')
if [ -n "$mib" ] && [ "$mib" -gt {cap} ]; then
  echo "isthmus lab: MAX_HEAP_SIZE=$heap is above the lab's cap; running with {cap}M" >&2
  heap={cap}M
fi
opts=$(cat "$CASSANDRA_CONF/jvm-server.options" "$CASSANDRA_CONF/jvm17-server.options" 2>/dev/null \\
       | grep -E '^-' | tr '\\n' ' ')
mkdir -p "$CASSANDRA_HOME/logs" 2>/dev/null || true
exec "$JAVA_HOME/bin/java" -Xms"$heap" -Xmx"$heap" $opts \\
  -javaagent:"$CASSANDRA_HOME/lib/{jamm}" \\
  -Dcassandra.jmx.local.port=7199 -Dcom.sun.management.jmxremote.authenticate=false \\
  -Dcassandra-foreground=yes -Dcassandra.logdir=/tmp -Dcassandra.storagedir=/var/lib/cassandra \\
  -Dlogback.configurationFile=logback.xml \\
  -cp "$CASSANDRA_CONF:$CASSANDRA_HOME/lib/*" org.apache.cassandra.service.CassandraDaemon
"""

_NODETOOL_JVM = """#!/bin/sh
# nodetool for the Isthmus lab's cassandra:{version} image, cold: the tarball's nodetool, to JMX on 127.0.0.1:7199,
# in a JVM of its own (small heap, serial GC, C1 only). `nodetool` runs this when the warm server is not up.
CASSANDRA_HOME=${{CASSANDRA_HOME:-/opt/cassandra}}
exec "$JAVA_HOME/bin/java" -Xmx128m -Xss512k -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+PerfDisableSharedMem \\
  {modules} \\
  -Duser.home=/tmp -Djava.net.preferIPv4Stack=true -Dcassandra.storagedir=/tmp \\
  -Dlogback.configurationFile=logback-tools.xml \\
  -cp "/etc/cassandra:$CASSANDRA_HOME/lib/*" org.apache.cassandra.tools.NodeTool -h 127.0.0.1 -p 7199 "$@"
"""

_NODETOOL_SERVER = """#!/bin/sh
# The warm nodetool of the lab's cassandra:{version} image (IsthmusNodetoolServer): NodeTool in one JVM per
# container, serving `nodetool` over a Unix socket. The pod runtime starts it beside the node and stops it with it.
CASSANDRA_HOME=${{CASSANDRA_HOME:-/opt/cassandra}}
exec "$JAVA_HOME/bin/java" -Xmx96m -Xss512k -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+PerfDisableSharedMem \\
  -Djava.security.manager=allow {modules} \\
  -Duser.home=/tmp -Djava.net.preferIPv4Stack=true -Dcassandra.storagedir=/tmp \\
  -Dlogback.configurationFile=logback-tools.xml \\
  -cp "/opt/cassandra/isthmus:/etc/cassandra:$CASSANDRA_HOME/lib/*" org.apache.cassandra.tools.IsthmusNodetoolServer \\
  {socket}
"""

#: Where a container's warm nodetool listens (the container's own /tmp).
NODETOOL_SOCKET = "/tmp/.isthmus-nodetool.sock"

_NODETOOL = """#!/usr/bin/python3 -IS
# nodetool for the Isthmus lab's cassandra:{version} image: Cassandra's NodeTool, run by the container's warm
# server (nodetool-server) when it is up, else in a JVM of its own (nodetool-jvm). Same arguments, output, status.
import os
import socket
import struct
import sys

try:
    conn = socket.socket(socket.AF_UNIX)
    conn.connect("{socket}")
except OSError:
    os.execv("/opt/cassandra/bin/nodetool-jvm", ["nodetool", *sys.argv[1:]])
payload = "\\0".join(["-h", "127.0.0.1", "-p", "7199", *sys.argv[1:]]).encode()
conn.sendall(struct.pack(">I", len(payload)) + payload)
stream = conn.makefile("rb")
status = 1
while len(head := stream.read(5)) == 5:
    data = stream.read(struct.unpack(">I", head[1:])[0])
    if head[:1] == b"o":
        sys.stdout.buffer.write(data)
    elif head[:1] == b"e":
        sys.stderr.buffer.write(data)
    elif head[:1] == b"x":
        status = int(data)
sys.stdout.flush()
sys.exit(status)
"""

_LOGBACK_TOOLS = """<configuration scan="false">
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %date{ISO8601} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR"/></root>
</configuration>
"""


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    path.chmod(mode)


def cassandra_image(version: str, *, images_dir: Path, heap_cap_mib: int = DEFAULT_HEAP_CAP_MIB) -> ImageLayer:
    """The lab's ``cassandra:<version>``; resolves the jars (Maven Central) on first use.

    Raises :class:`isthmus.lab.cassandra_install.CassandraLabError` with Maven's own words when the
    version cannot be had: the runtime reports that as the container's image pull error.
    """
    lib = ensure_cassandra(version)
    java_home = find_java().resolve().parent.parent
    root = images_dir / f"cassandra-{version}"
    jamm = jamm_jar(lib).name
    _write(root / "opt/cassandra/bin/cassandra", _CASSANDRA.format(version=version, cap=heap_cap_mib, jamm=jamm),
           0o755)
    # The JPMS exports and opens of conf/jvm17-clients.options: the tools reflect into the JDK as the server does.
    modules = " ".join(o for o in _paired(JVM17_SERVER_OPTIONS) if o.startswith("--add-"))
    _write(root / "opt/cassandra/bin/nodetool-jvm", _NODETOOL_JVM.format(version=version, modules=modules), 0o755)
    _write(root / "opt/cassandra/bin/nodetool-server",
           _NODETOOL_SERVER.format(version=version, modules=modules, socket=NODETOOL_SOCKET), 0o755)
    _write(root / "opt/cassandra/bin/nodetool", _NODETOOL.format(version=version, socket=NODETOOL_SOCKET), 0o755)
    _compile_server(lib, java_home, root / "opt/cassandra/isthmus")
    (root / "opt/cassandra/lib").mkdir(parents=True, exist_ok=True)
    conf = root / "etc/cassandra"
    _write(conf / "jvm-server.options", "# From Cassandra's conf/jvm-server.options (5.0), as in the lab's nodes.\n"
           + "".join(f"{o}\n" for o in JVM_SERVER_OPTIONS)
           + "# Lab image: fast start-up on a small machine (not in the official image).\n"
           + "".join(f"{o}\n" for o in LAB_SYSTEM_PROPERTIES)
           + "-XX:TieredStopAtLevel=1\n")
    _write(conf / "jvm17-server.options", "# From Cassandra's conf/jvm17-server.options (5.0).\n"
           + "".join(f"{o}\n" for o in _paired(JVM17_SERVER_OPTIONS)))
    _write(conf / "logback.xml", render_logback_xml())
    _write(conf / "logback-tools.xml", _LOGBACK_TOOLS)
    _write(conf / "cassandra-rackdc.properties", "dc=dc1\nrack=rack1\n")
    passwd = Path("/etc/passwd").read_text()
    if not any(line.split(":")[2:3] == [str(CASSANDRA_UID)] for line in passwd.splitlines()):
        passwd += f"cassandra:x:{CASSANDRA_UID}:{CASSANDRA_UID}::/var/lib/cassandra:/bin/sh\n"
    _write(root / "etc/passwd", passwd)
    return ImageLayer(
        dir=root,
        binds=((lib, "/opt/cassandra/lib"),),
        env={"CASSANDRA_HOME": "/opt/cassandra", "CASSANDRA_CONF": "/etc/cassandra", "JAVA_HOME": str(java_home),
             "PATH": "/opt/cassandra/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def _compile_server(lib: Path, java_home: Path, out: Path) -> None:
    """Compile the warm nodetool (templates/IsthmusNodetoolServer.java) against this version's jars, once."""
    source = Path(__file__).parent.parent / "templates" / "IsthmusNodetoolServer.java"
    target = out / "org/apache/cassandra/tools/IsthmusNodetoolServer.class"
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return
    javac = java_home / "bin" / "javac"
    proc = subprocess.run([str(javac), "-nowarn", "-cp", f"{lib}/*", "-d", str(out), str(source)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise CassandraLabError(f"compiling the lab's warm nodetool failed ({javac}): {proc.stderr.strip()[-800:]}")


def _paired(options: tuple[str, ...]) -> list[str]:
    """``--add-exports X`` pairs on one line each (the options file's form); other options as they are."""
    out: list[str] = []
    it = iter(options)
    for opt in it:
        out.append(f"{opt} {next(it)}" if opt in ("--add-exports", "--add-opens") else opt)
    return out


def isthmus_image() -> ImageLayer:
    """The Isthmus image as this installation: its ``isthmus`` command and the code it runs, bound in."""
    prefix = Path(sys.prefix)
    import isthmus

    source = Path(isthmus.__file__).resolve().parent.parent
    binds = [(prefix, str(prefix))]
    if not source.is_relative_to(prefix):  # an editable install: the source tree too
        binds.append((source, str(source)))
    base = Path(sys.base_prefix)
    if not base.is_relative_to(Path("/usr")):  # the interpreter lives outside /usr (pyenv): bind it too
        binds.append((base, str(base)))
    path = f"{prefix / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return ImageLayer(dir=None, binds=tuple(binds), env={"PATH": path, "PYTHONUNBUFFERED": "1",
                                                         "HOME": "/tmp", "LANG": os.environ.get("LANG", "C.UTF-8")})
