"""Running the real ``helm`` (built from the Go module proxy into the lab cache) on ``deploy/chart``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from isthmus.lab.binaries import ensure_helm

CHART = Path(__file__).resolve().parents[2] / "deploy" / "chart"


def helm(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(ensure_helm()), *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def template(*args: str, namespace: str = "isthmus-system") -> list[dict[str, Any]]:
    out = helm("template", "isthmus", str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]
