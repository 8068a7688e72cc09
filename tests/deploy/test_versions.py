"""Every version scripts/e2e.sh pins can be traced to upstream source: each is a release whose Go module the
module proxy serves (authenticated by the checksum database), and the kind node image is the one that kind
release names in its own source. Read from the Go module cache (`go mod download`), as the control plane is."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO
from tests.deploy.test_manifests import K8S_VERSION

SCRIPT = (REPO / "scripts" / "e2e.sh").read_text()
# The script's own notes: `NAME="version"  # [module version]`.
PINS = re.findall(r'^([A-Z_]+_VERSION)="([^"]+)"\s+# \[(\S+) (v\S+)\]', SCRIPT, re.M)


def _download(module: str, version: str) -> dict[str, str]:
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True, timeout=300
    )
    info = json.loads(proc.stdout or "{}")
    assert proc.returncode == 0 and not info.get("Error"), f"{module}@{version}: {info.get('Error') or proc.stderr}"
    return info


def test_every_pin_names_the_module_it_is_checked_against() -> None:
    """Each `*_VERSION=` the script sets carries its `# [module version]` note, so the tests below check it."""
    pinned = re.findall(r"^([A-Z_]+_VERSION)=", SCRIPT, re.M)
    assert pinned, "scripts/e2e.sh pins no versions"
    assert sorted(pinned) == sorted(name for name, *_ in PINS)


@pytest.mark.parametrize(("name", "release", "module", "version"), PINS, ids=[p[0] for p in PINS])
def test_the_pinned_release_is_served_by_the_module_proxy(name: str, release: str, module: str, version: str) -> None:
    info = _download(module, version)
    assert info["Version"] == version
    if release.startswith("knative-"):
        # Knative tags its releases knative-v1.N.P and its Go modules v0.(N+27).P.
        major, minor, patch = release.removeprefix("knative-v").split(".")
        assert (major, f"v0.{int(minor) + 27}.{patch}") == ("1", version)
    else:
        assert release == version


def test_the_kind_node_image_is_the_one_kind_names_in_its_source() -> None:
    version = next(v for name, _, module, v in PINS if name == "KIND_VERSION")
    folder = Path(_download("sigs.k8s.io/kind", version)["Dir"])
    source = (folder / "pkg/apis/config/defaults/image.go").read_text()
    image = re.search(r'const Image = "([^"]+)"', source)
    assert image, source
    assert re.fullmatch(r"kindest/node:v(\d+\.\d+\.\d+)@sha256:[0-9a-f]{64}", image.group(1))
    node = image.group(1).split(":v")[1].split("@")[0]
    assert node == K8S_VERSION  # what the manifests are validated against offline
    # `go install sigs.k8s.io/kind@<version>` (what the script falls back to) refuses replace/exclude directives.
    assert not re.search(r"^\s*(replace|exclude)\b", (folder / "go.mod").read_text(), re.M)
    # With no KIND_NODE_IMAGE the script passes no --image: kind uses exactly that default.
    assert 'KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"' in SCRIPT
