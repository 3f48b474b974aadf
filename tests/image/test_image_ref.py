"""Images by digest: the value type, the CLI options, and the guard sidecar's setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from isthmus.image import RELEASED, REPOSITORY, ImageRef
from isthmus.spec import SpecError
from isthmus.spec.cassandra import AccessSpec

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_parse_and_str_round_trip() -> None:
    ref = ImageRef.parse(f"registry.example:5000/team/isthmus@{DIGEST}")
    assert (ref.repository, ref.digest) == ("registry.example:5000/team/isthmus", DIGEST)
    assert ImageRef.parse(str(ref)) == ref
    assert str(RELEASED).startswith(f"{REPOSITORY}@sha256:")


@pytest.mark.parametrize(("text", "problem"), [
    ("ghcr.io/isthmus-dev/isthmus:0.1.0", "has no digest"),
    ("ghcr.io/isthmus-dev/isthmus", "has no digest"),
    ("ghcr.io/isthmus-dev/isthmus@sha256:abc", "is not an image digest"),
    (f"ghcr.io/isthmus-dev/isthmus@md5:{'0' * 32}", "is not an image digest"),
    (f"Registry/Upper@{DIGEST}", "is not an image repository"),
])
def test_tags_and_malformed_references_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ImageRef.parse(text)


def test_manifests_take_a_digest_and_refuse_a_tag_with_exit_code_2() -> None:
    ok = subprocess.run([ISTHMUS, "operator", "manifests", "--image", f"registry.example/isthmus@{DIGEST}"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    deployment = next(d for d in yaml.safe_load_all(ok.stdout) if d and d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"registry.example/isthmus@{DIGEST}"
    bad = subprocess.run([ISTHMUS, "operator", "manifests", "--image", "registry.example/isthmus:1.0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no digest" in lines[0] and "--image" in lines[0]


def test_the_guard_image_setting_takes_a_digest() -> None:
    assert AccessSpec.model_validate({"guardImage": f"r.example/g@{DIGEST}"}).guard_image == f"r.example/g@{DIGEST}"
    with pytest.raises((ValueError, SpecError), match="has no digest"):
        AccessSpec.model_validate({"guardImage": "r.example/g:1"})
