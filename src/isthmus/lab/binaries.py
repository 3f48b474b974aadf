"""Build the lab's Kubernetes, etcd and kwok binaries from the Go module proxy.

Owns: generating the small wrapper Go modules, running ``go build`` with the release's
version ldflags, and caching the results under ``~/.cache/isthmus/lab/<version>/bin``.
Must not: start any process other than the Go toolchain.

Why wrapper modules: ``k8s.io/kubernetes`` is not meant to be required from another module;
its go.mod points every ``k8s.io/*`` staging module at ``./staging/src/...`` which does not
exist outside its repository. We read the release's own go.mod, turn each of those local
replaces into the published ``v0.X.Y`` tag, and build the ``cmd/`` packages from there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ETCD_VERSION",
    "HELM_VERSION",
    "KUBERNETES_VERSION",
    "KWOK_VERSION",
    "TOXIPROXY_VERSION",
    "BuildError",
    "LabBinaries",
    "binaries_dir",
    "ensure_binaries",
    "ensure_helm",
    "ensure_toxiproxy",
    "helm_path",
    "kwok_crds",
    "toxiproxy_path",
]

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"
KWOK_VERSION = "v0.8.0"
#: built on demand by :func:`ensure_toxiproxy` (only the latency faults need it)
TOXIPROXY_VERSION = "v2.12.0"


HELM_VERSION = "v3.22.0"

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/src/\S+\s*$", re.M)


class BuildError(RuntimeError):
    """The Go toolchain is missing or a build failed; the message says which and how to fix."""


@dataclass(frozen=True)
class LabBinaries:
    bin_dir: Path

    def path(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def names(self) -> tuple[str, ...]:
        return (*KUBE_COMMANDS, "etcd", "kwok")

    def missing(self) -> list[str]:
        return [n for n in self.names if not os.access(self.path(n), os.X_OK)]


def cache_root() -> Path:
    return Path(os.environ.get("ISTHMUS_CACHE", Path.home() / ".cache" / "isthmus"))


def binaries_dir(version: str = KUBERNETES_VERSION) -> Path:
    return cache_root() / "lab" / version / "bin"


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError("Go is not installed: install Go >= 1.24 (https://go.dev/doc/install) and retry")
    return go


def _run(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    with log.open("ab") as out:
        out.write(("$ " + " ".join(args) + "\n").encode())
        out.flush()
        proc = subprocess.run(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise BuildError(f"`{' '.join(args)}` failed in {cwd} (log: {log}):\n" + "\n".join(tail))


def _go_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
    env.setdefault("GOCACHE", str(cache_root() / "go-build"))
    return env


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The ``k8s.io/*`` modules a Kubernetes release replaces with its own staging tree."""
    return sorted(set(_STAGING_REPLACE.findall(kubernetes_go_mod)))


def staging_tag(version: str) -> str:
    """``v1.36.3`` -> ``v0.36.3``: staging modules are tagged with the major version zeroed."""
    major, minor, patch = version.lstrip("v").split(".", 2)
    if major != "1":
        raise BuildError(f"unexpected Kubernetes version {version}")
    return f"v0.{minor}.{patch}"


def _download_go_mod(module: str, version: str, work: Path, env: dict[str, str]) -> str:
    out = subprocess.run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        cwd=work, env=env, capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise BuildError(
            f"cannot download {module}@{version} from the Go module proxy: {out.stdout}{out.stderr}"
        )
    return Path(json.loads(out.stdout)["GoMod"]).read_text()


def _version_ldflags(version: str) -> str:
    major, minor, _ = version.lstrip("v").split(".", 2)
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.gitCommit=isthmus-lab-{version}",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return "-s -w " + " ".join(flags)


def _kube_module(work: Path, version: str, env: dict[str, str], log: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    release_mod = _download_go_mod("k8s.io/kubernetes", version, work, env)
    tag = staging_tag(version)
    go_line = re.search(r"^go (\S+)", release_mod, re.M)
    lines = [
        "module isthmus.dev/lab/kube",
        "",
        f"go {go_line.group(1) if go_line else '1.24'}",
        "",
        f"require k8s.io/kubernetes {version}",
        "",
        "replace (",
        *[f"\t{m} => {m} {tag}" for m in staging_modules(release_mod)],
        ")",
        "",
    ]
    (work / "go.mod").write_text("\n".join(lines))
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"' for c in KUBE_COMMANDS)
    (work / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
    _run([_go(), "mod", "tidy", "-e"], work, env, log)


def _etcd_module(work: Path, env: dict[str, str], log: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text(
        f"module isthmus.dev/lab/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n"
    )
    (work / "main.go").write_text(
        'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n"
    )
    _run([_go(), "mod", "tidy"], work, env, log)


def ensure_binaries(version: str = KUBERNETES_VERSION, *, echo: bool = True) -> LabBinaries:
    """Build whatever is missing and return where the binaries are; a warm cache costs nothing."""
    bins = LabBinaries(binaries_dir(version))
    missing = bins.missing()
    if not missing:
        return bins
    root = bins.bin_dir.parent
    work = root / "src"
    bins.bin_dir.mkdir(parents=True, exist_ok=True)
    log = root / "build.log"
    env = _go_env(work)

    def say(msg: str) -> None:
        if echo:
            print(f"[isthmus lab build] {msg}", file=sys.stderr, flush=True)

    kube_missing = [c for c in KUBE_COMMANDS if c in missing]
    if kube_missing:
        say(f"building {', '.join(kube_missing)} {version} (first build takes minutes; log: {log})")
        _kube_module(work / "kube", version, env, log)
        for cmd in kube_missing:
            say(f"go build {cmd}")
            _run([_go(), "build", "-trimpath", "-ldflags", _version_ldflags(version),
                  "-o", str(bins.path(cmd)),
                  f"k8s.io/kubernetes/cmd/{cmd}"], work / "kube", env, log)
    if "etcd" in missing:
        say(f"building etcd {ETCD_VERSION}")
        _etcd_module(work / "etcd", env, log)
        _run([_go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", str(bins.path("etcd")), "."],
             work / "etcd", env, log)
    if "kwok" in missing:
        say(f"building kwok {KWOK_VERSION}")
        genv = dict(env, GOBIN=str(bins.bin_dir))
        _run([_go(), "install", "-trimpath", "-ldflags", "-s -w",
              f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"],
             root, genv, log)
    still = bins.missing()
    if still:
        raise BuildError(f"build finished but {', '.join(still)} is missing in {bins.bin_dir} (log: {log})")
    say(f"binaries ready in {bins.bin_dir}")
    return bins


#: The kwok CRDs the lab installs (file names in kwok's module, kustomize/crd/bases).
KWOK_CRD_FILES = ("kwok.x-k8s.io_execs.yaml", "kwok.x-k8s.io_logs.yaml", "kwok.x-k8s.io_portforwards.yaml")


def kwok_crds(*, echo: bool = True) -> list[Path]:
    """kwok's own CRD manifests for Exec, Logs and PortForward, from its module (the Go module proxy), cached.

    kwok watches these objects to serve ``kubectl exec``, ``logs`` and ``port-forward``; kwokctl applies
    the same files. They are data of the kwok release the lab runs, so they come from that module.
    """
    target = binaries_dir().parent / "kwok-crds" / KWOK_VERSION
    wanted = [target / name for name in KWOK_CRD_FILES]
    if all(p.is_file() for p in wanted):
        return wanted
    if echo:
        print(f"[isthmus lab build] fetching kwok {KWOK_VERSION} CRDs", file=sys.stderr, flush=True)
    work = binaries_dir().parent / "src"
    work.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([_go(), "mod", "download", "-json", f"sigs.k8s.io/kwok@{KWOK_VERSION}"],
                         cwd=work, env=_go_env(work), capture_output=True, text=True)
    if out.returncode != 0:
        raise BuildError(f"cannot download sigs.k8s.io/kwok@{KWOK_VERSION}: {out.stdout}{out.stderr}")
    bases = Path(json.loads(out.stdout)["Dir"]) / "kustomize" / "crd" / "bases"
    target.mkdir(parents=True, exist_ok=True)
    for name in KWOK_CRD_FILES:
        shutil.copyfile(bases / name, target / name)
    return wanted

def toxiproxy_path(version: str = TOXIPROXY_VERSION) -> Path:
    """Where :func:`ensure_toxiproxy` caches the Toxiproxy server (apart from the Kubernetes bin dir)."""
    return cache_root() / "lab" / f"toxiproxy-{version}" / "bin" / "toxiproxy-server"


def ensure_toxiproxy(version: str = TOXIPROXY_VERSION, *, echo: bool = True) -> Path:
    """Build Toxiproxy's server from the Go module proxy if it is not cached; return its path."""
    exe = toxiproxy_path(version)
    if os.access(exe, os.X_OK):
        return exe
    root = exe.parent.parent
    exe.parent.mkdir(parents=True, exist_ok=True)
    log = root / "build.log"
    if echo:
        print(f"[isthmus lab build] building toxiproxy {version} (log: {log})", file=sys.stderr, flush=True)
    work = root / "src"
    work.mkdir(parents=True, exist_ok=True)
    env = _go_env(work)
    (work / "go.mod").write_text(
        f"module isthmus.dev/lab/toxiproxy\n\ngo 1.24\n\nrequire github.com/Shopify/toxiproxy/v2 {version}\n"
    )
    (work / "tools.go").write_text(
        '//go:build tools\n\npackage tools\n\nimport _ "github.com/Shopify/toxiproxy/v2/cmd/server"\n'
    )
    _run([_go(), "mod", "tidy"], work, env, log)
    tmp = exe.with_suffix(".tmp")
    _run([_go(), "build", "-trimpath", "-ldflags", f"-s -w -X github.com/Shopify/toxiproxy/v2.Version={version}",
          "-o", str(tmp), "github.com/Shopify/toxiproxy/v2/cmd/server"], work, env, log)
    tmp.replace(exe)
    return exe


def helm_path(version: str = HELM_VERSION) -> Path:
    return cache_root() / "tools" / f"helm-{version}" / "helm"


def ensure_helm(version: str = HELM_VERSION, *, echo: bool = True) -> Path:
    """Build ``helm`` (on demand, not part of :func:`ensure_binaries`) and return its path; cached."""
    path = helm_path(version)
    if os.access(path, os.X_OK):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.parent / "build.log"
    if echo:
        print(f"[isthmus lab build] building helm {version} (log: {log})", file=sys.stderr, flush=True)
    env = dict(_go_env(path.parent), GOBIN=str(path.parent))
    _run([_go(), "install", "-trimpath",
          "-ldflags", f"-s -w -X helm.sh/helm/v3/internal/version.version={version}",
          f"helm.sh/helm/v3/cmd/helm@{version}"], path.parent, env, log)
    if not os.access(path, os.X_OK):
        raise BuildError(f"build finished but {path} is missing (log: {log})")
    return path


if __name__ == "__main__":
    try:
        if sys.argv[1:] == ["helm"]:
            print(ensure_helm())
            sys.exit(0)
        print(ensure_binaries().bin_dir)
        kwok_crds()
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
