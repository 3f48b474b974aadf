"""Volumes of lab pods, and the lab's storage provisioner.

Owns: turning a pod's ``volumes`` into host folders (``emptyDir`` in the pod's folder, ``configMap`` and
``secret`` written out as files, an absent ``optional`` ConfigMap as an empty folder,
``persistentVolumeClaim`` as its bound PersistentVolume's folder, ``hostPath``), ownership for
``fsGroup``, and the provisioner behind the lab's default StorageClass: a claim gets a PersistentVolume
whose data lives under the lab's state folder; a released volume whose reclaim policy is Delete loses
its folder and its object. Must not: start containers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .api import JSON, RuntimeApi

__all__ = ["PROVISIONER", "STORAGE_CLASS", "VolumeNotReady", "prepare_volumes", "run_provisioner",
           "storage_class"]

log = logging.getLogger("isthmus.lab.pods.volumes")

PROVISIONER = "isthmus.dev/lab-hostpath"
STORAGE_CLASS = "lab"
_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
_CLAIM_PROVISIONER = "volume.kubernetes.io/storage-provisioner"


class VolumeNotReady(Exception):
    """A volume cannot be set up yet (a claim not bound, a ConfigMap missing): the pod waits and retries."""


def storage_class() -> JSON:
    """The lab's default StorageClass (applied at ``lab up``)."""
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS,
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": False}


def _write_files(folder: Path, files: Mapping[str, bytes], mode: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        tmp.replace(path)


def _selected(data: Mapping[str, bytes], items: list[dict[str, Any]] | None, where: str) -> dict[str, bytes]:
    if not items:
        return dict(data)
    out: dict[str, bytes] = {}
    for item in items:
        if item["key"] not in data:
            raise VolumeNotReady(f"{where} has no key {item['key']!r}")
        out[item["path"]] = data[item["key"]]
    return out


def _chown_tree(path: Path, uid: int | None, gid: int | None) -> None:
    if gid is None:
        return
    st = path.stat()
    if st.st_gid == gid:  # fsGroupChangePolicy OnRootMismatch
        return
    for dirpath, dirnames, filenames in os.walk(path):
        for target in [Path(dirpath), *(Path(dirpath) / n for n in [*dirnames, *filenames])]:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(target, uid if uid is not None else -1, gid)
    path.chmod(0o2775)


async def prepare_volumes(api: RuntimeApi, pod: JSON, pod_dir: Path) -> dict[str, Path]:
    """Host folders for each of the pod's volumes, by volume name; raises :class:`VolumeNotReady`."""
    ns = pod["metadata"]["namespace"]
    sec = pod["spec"].get("securityContext") or {}
    fs_group, run_as = sec.get("fsGroup"), sec.get("runAsUser")
    out: dict[str, Path] = {}
    for vol in pod["spec"].get("volumes", []):
        name = vol["name"]
        folder = pod_dir / "volumes" / name
        if "emptyDir" in vol:
            folder.mkdir(parents=True, exist_ok=True)
            _chown_tree(folder, run_as, fs_group)
        elif "configMap" in vol:
            ref = vol["configMap"]
            cm = await api.get(f"/api/v1/namespaces/{ns}/configmaps/{ref['name']}")
            if cm is None and ref.get("optional"):  # as the kubelet does: an empty volume
                folder.mkdir(parents=True, exist_ok=True)
                out[name] = folder
                continue
            if cm is None:
                raise VolumeNotReady(f'configmap "{ref["name"]}" not found')
            data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
            data |= {k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()}
            _write_files(folder, _selected(data, ref.get("items"), f'configmap "{ref["name"]}"'),
                         ref.get("defaultMode", 0o644))
        elif "secret" in vol:
            ref = vol["secret"]
            secret = await api.get(f"/api/v1/namespaces/{ns}/secrets/{ref['secretName']}")
            if secret is None:
                raise VolumeNotReady(f'secret "{ref["secretName"]}" not found')
            data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
            _write_files(folder, _selected(data, ref.get("items"), f'secret "{ref["secretName"]}"'),
                         ref.get("defaultMode", 0o644))
        elif "persistentVolumeClaim" in vol:
            claim_name = vol["persistentVolumeClaim"]["claimName"]
            claim = await api.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim_name}")
            if claim is None:
                raise VolumeNotReady(f'persistentvolumeclaim "{claim_name}" not found')
            if claim.get("status", {}).get("phase") != "Bound":
                raise VolumeNotReady(f'persistentvolumeclaim "{claim_name}" is not bound yet')
            pv = await api.get(f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")
            path = ((pv or {}).get("spec", {}).get("hostPath") or (pv or {}).get("spec", {}).get("local") or {}).get(
                "path")
            if not path:
                raise VolumeNotReady(f'persistentvolume of claim "{claim_name}" has no local path the lab can mount')
            folder = Path(path)
            folder.mkdir(parents=True, exist_ok=True)
            _chown_tree(folder, run_as, fs_group)
        elif "hostPath" in vol:
            folder = Path(vol["hostPath"]["path"])
        else:
            folder.mkdir(parents=True, exist_ok=True)  # other kinds: an empty folder (the lab does not fill them)
        out[name] = folder
    return out


async def run_provisioner(api: RuntimeApi, volumes_root: Path, *, interval: float = 1.0) -> None:
    """Forever: give pending claims of the lab's class a volume; delete released volumes of ours."""
    while True:
        try:
            await _provision_once(api, volumes_root)
        except Exception as exc:  # the API server may be away (a fault): try again
            log.debug("provisioner: %s", exc)
        await asyncio.sleep(interval)


async def _provision_once(api: RuntimeApi, volumes_root: Path) -> None:
    claims = (await api.list("/api/v1/persistentvolumeclaims"))["items"]
    for claim in claims:
        meta = claim["metadata"]
        if claim.get("status", {}).get("phase") != "Pending" or claim["spec"].get("volumeName"):
            continue
        if (meta.get("annotations") or {}).get(_CLAIM_PROVISIONER) != PROVISIONER:
            continue
        uid = meta["uid"]
        folder = volumes_root / f"pvc-{uid}"
        folder.mkdir(parents=True, exist_ok=True)
        pv = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"pvc-{uid}", "annotations": {_PROVISIONED_BY: PROVISIONER}},
            "spec": {
                "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                "accessModes": claim["spec"].get("accessModes", ["ReadWriteOnce"]),
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": claim["spec"].get("storageClassName", STORAGE_CLASS),
                "volumeMode": claim["spec"].get("volumeMode", "Filesystem"),
                "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                             "name": meta["name"], "uid": uid},
            },
        }
        await api.create("/api/v1/persistentvolumes", pv)
    for pv in (await api.list("/api/v1/persistentvolumes"))["items"]:
        if (pv["metadata"].get("annotations") or {}).get(_PROVISIONED_BY) != PROVISIONER:
            continue
        if pv.get("status", {}).get("phase") in ("Released", "Failed") and \
                pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
            path = Path(pv["spec"]["hostPath"]["path"])
            if path.is_relative_to(volumes_root):
                await asyncio.to_thread(shutil.rmtree, path, True)
            await api.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
