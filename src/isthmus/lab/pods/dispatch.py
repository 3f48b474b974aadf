"""How ``kubectl exec`` reaches a container of the lab's pod runtime through kwok.

kwok serves the kubelet's exec endpoint by running the requested command itself, looked up in kwok's
``PATH``, with the environment of the pod's ``Exec`` object (see
:meth:`isthmus.lab.pods.runtime.Runtime.write_kwok_objects`: ``ISTHMUS_CONTAINER_DIR`` names the
container's folder). The lab starts kwok with ``PATH`` set to one folder in which every command name is
a link to one small script: it reads the container's PID and user from that folder and ``nsenter``s
into the container (mount, network and UTS namespaces, its root and working directory, its user), loads
the container's environment and runs the command there, by name, found in the container's own ``PATH``.
A command given as an absolute path (``kubectl exec ... -- /bin/sh``) is not looked up, so kwok runs it
on the lab host instead: give commands by name.

Owns: writing that folder. Must not: start anything.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DISPATCHER", "write_dispatch_dir"]

DISPATCHER = """#!/bin/sh
# kubectl exec into a container of the isthmus lab's pod runtime (see isthmus.lab.pods.dispatch).
d="${ISTHMUS_CONTAINER_DIR:-}"
if [ -z "$d" ]; then
  echo "isthmus lab: this pod is simulated by kwok; it has no processes to exec into" >&2
  exit 126
fi
pid=$(/bin/cat "$d/pid" 2>/dev/null) || { echo "isthmus lab: container is not running" >&2; exit 126; }
uid=$(/bin/cat "$d/uid" 2>/dev/null || echo 0)
gid=$(/bin/cat "$d/gid" 2>/dev/null || echo 0)
name=$(/usr/bin/basename "$0")
exec /usr/bin/nsenter -t "$pid" -m -n -u -r -w -G "$gid" -S "$uid" -- \\
  /bin/sh -c '. /.isthmus-env; exec "$@"' sh "$name" "$@"
"""

#: Where commands are found on the host, to name the links (the containers' PATH folders).
_HOST_BIN = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
#: Commands of the lab's images that the host does not have.
_IMAGE_COMMANDS = ("cassandra", "nodetool", "isthmus")


def write_dispatch_dir(folder: Path) -> Path:
    """(Re)write ``folder``: the dispatcher and a link to it for every command name; returns ``folder/bin``."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = folder / "lab-exec"
    script.write_text(DISPATCHER)
    script.chmod(0o755)
    names = set(_IMAGE_COMMANDS)
    for d in _HOST_BIN:
        try:
            names.update(e.name for e in os.scandir(d) if not e.name.startswith("."))
        except FileNotFoundError:
            continue
    for name in sorted(names):
        link = bin_dir / name
        if not link.is_symlink():
            link.symlink_to(script)
    return bin_dir
