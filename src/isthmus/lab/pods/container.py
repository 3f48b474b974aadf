"""The first program of a lab container: build its root, drop privileges, exec the container's command.

Run by the pod runtime as ``nsenter --net=<pod netns> unshare --mount --propagation private python -m
isthmus.lab.pods.container <spec.json>``: it starts in the pod's network namespace and in a mount
namespace of its own, so every mount below is private to this container and goes away with it.

The root is a tmpfs with the host's ``/usr`` (read-only), the merged-usr symlinks, ``/etc`` as an overlay
(the host's files below, the image's and the pod's on top, writes kept in the tmpfs), the image's other
folders, ``/proc``, ``/sys`` and ``/dev``, and the pod's volumes at their mount paths. Then ``chroot``,
``setgroups``/``setgid``/``setuid`` to the pod's security context, ``chdir`` and ``execve``: the
container's PID is this process's PID, which is what ``kubectl exec`` and the probes enter (``nsenter -t
<pid> -m -n -r -w``).

Must not: talk to any API server; the spec file is everything it knows. Errors go to stderr (the
container's log) with exit code 127 (command not found) or 126 (cannot run), as a container runtime's do.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]

#: Where the container's own files (its environment, for ``kubectl exec``) live inside its root.
ENV_FILE = "/.isthmus-env"


def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(f"mount {' '.join(args)}: {proc.stderr.strip()}")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def build_root(spec: dict[str, Any]) -> Path:
    root = Path(spec["root"])
    root.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(root))
    layers = [Path(p) for p in spec.get("layers", [])]
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        if Path("/" + link).is_symlink():
            (root / link).symlink_to(target)
    for name in ("usr", "proc", "sys", "dev", "tmp", "run", "var", "root", "home", "opt", "etc", ".isthmus-ovl"):
        (root / name).mkdir(mode=0o755, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    _mount("--rbind", "-o", "ro", "/usr", str(root / "usr"))
    _mount("--rbind", "/proc", str(root / "proc"))
    _mount("--rbind", "/sys", str(root / "sys"))
    _mount("--rbind", "/dev", str(root / "dev"))
    _mount("-t", "tmpfs", "-o", "mode=1777", "tmpfs", str(root / "tmp"))
    # /etc and /opt: overlays, the image's layers over the host's folder, writes kept in the root's tmpfs.
    for top in ("etc", "opt", "var"):
        lowers = [str(layer / top) for layer in layers if (layer / top).is_dir()]
        if Path("/" + top).is_dir():
            lowers.append("/" + top)
        if not lowers:
            continue
        upper, work = root / ".isthmus-ovl" / top, root / ".isthmus-ovl" / f"{top}.work"
        upper.mkdir(parents=True)
        work.mkdir()
        _mount("-t", "overlay", "overlay", "-o",
               f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}", str(root / top))
    for name, text in spec.get("files", {}).items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for bind in spec.get("binds", []):
        source, target = Path(bind["source"]), root / bind["target"].lstrip("/")
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        _mount("--bind", str(source), str(target))
        if bind.get("readOnly"):
            _mount("-o", "remount,bind,ro", str(target))
    env = spec.get("env", {})
    (root / ENV_FILE.lstrip("/")).write_text("".join(f"export {k}={_quote(v)}\n" for k, v in env.items()))
    return root


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    try:
        root = build_root(spec)
        if spec.get("hostname"):
            socket.sethostname(spec["hostname"])  # in the container's own UTS namespace
        os.chroot(root)
        os.chdir(spec.get("workingDir") or "/")
    except OSError as exc:
        print(f"isthmus lab runtime: cannot build the container's root: {exc}", file=sys.stderr, flush=True)
        return 126
    gid, uid = spec.get("runAsGroup"), spec.get("runAsUser")
    if gid is not None:
        os.setgroups([int(g) for g in {gid, *spec.get("supplementalGroups", [])}])
        os.setgid(int(gid))
    if uid is not None:
        os.setuid(int(uid))
    env = {str(k): str(v) for k, v in spec.get("env", {}).items()}
    command = [str(a) for a in spec["command"]]
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        print(f'exec: "{command[0]}": executable file not found in $PATH', file=sys.stderr, flush=True)
        return 127
    except OSError as exc:
        print(f'exec: "{command[0]}": {exc.strerror}', file=sys.stderr, flush=True)
        return 126
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
