"""Fixtures of the cluster tier: a control plane a kubelet can join, a real node (`node.py`) with our predictor
image in its containerd, and an MLflow server on the node's bridge, where pods reach it.

The tier needs root, podman (or docker), containerd, runc and the CNI plugins (.ci/install-containers). Without
them it is skipped, except under CI (CI set, as .ci/run does), where that is a broken setup and fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.host import RUN_PREFIX
from tests.cluster.ingress import RouteIngress
from tests.cluster.knative import KnativeServing
from tests.cluster.node import CNI_BIN, NODE_IP, Node
from tests.cluster.node import running as node_running
from tests.controlplane.build import NodePaths, ensure_knative, ensure_node
from tests.controlplane.plane import ControlPlane
from tests.controlplane.plane import running as plane_running
from tests.images.containers import Images
from tests.servers import MlflowServer, mlflow_server
from tests.tiers import in_ci


def _missing() -> list[str]:
    missing = [cmd for cmd in ("containerd", "ctr", "runc", "ip", "iptables", "nft") if shutil.which(cmd) is None]
    if not (CNI_BIN / "bridge").exists():
        missing.append(f"{CNI_BIN}/bridge (containernetworking-plugins)")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


@pytest.fixture(scope="session")
def cluster_paths() -> NodePaths:
    missing = _missing()
    if missing:
        if in_ci():
            pytest.fail(f"the cluster tier needs {', '.join(missing)} (.ci/install-containers)")
        pytest.skip(f"the cluster tier needs {', '.join(missing)}")
    return ensure_node()


@pytest.fixture(scope="session")
def cluster_plane(cluster_paths: NodePaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with plane_running(tmp_path_factory.mktemp("cluster-plane"), node_ip=NODE_IP) as plane:
        yield plane


@pytest.fixture(scope="session")
def node(cluster_plane: ControlPlane, cluster_paths: NodePaths, images: Images) -> Iterator[Node]:
    # A short folder: containerd's socket path must stay under the 108 bytes of a unix socket address.
    root = Path(f"{RUN_PREFIX}node-{os.getpid()}")
    root.mkdir()
    try:
        with node_running(root, cluster_plane, cluster_paths) as n:
            n.load_image(images.tool, images.predictor)
            yield n
    finally:
        # Only once nothing is mounted below it any more: a leftover bind mount would lead rmtree out of the folder.
        if not any(line.split()[4].startswith(str(root)) for line in Path("/proc/self/mountinfo").open()):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def node_mlflow(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real `mlflow server` on the node's bridge address (pods reach it there; so do the tests)."""
    with mlflow_server(tmp_path_factory.mktemp("node-mlflow"), host=NODE_IP) as server:
        yield server


@pytest.fixture(scope="session")
def knative_serving(node: Node, cluster_plane: ControlPlane) -> Iterator[RouteIngress]:
    """Knative Serving's components running as pods on the node, and the test ingress in front (`ingress.py`)."""
    KnativeServing(cluster_plane, node, ensure_knative()).install()
    api = cluster_plane.api_client()
    ingress = RouteIngress(api)
    try:
        yield ingress
    finally:
        ingress.close()
        api.close()
