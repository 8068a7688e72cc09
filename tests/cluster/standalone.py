"""`python -m tests.cluster.standalone ROOT`: a control plane and a node with one running pod, in a process of its
own, for the test that kills it (test_host.py). Prints `READY` once the pod runs, then waits to be killed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.cluster import pods
from tests.cluster.node import NODE_IP, PAUSE_IMAGE, running
from tests.controlplane.build import ensure_node
from tests.controlplane.plane import running as plane_running


def main(root: Path) -> None:
    paths = ensure_node()
    with plane_running(root / "plane", node_ip=NODE_IP) as plane, running(root / "node", plane, paths):
        ns = pods.namespace(plane, "killed")
        plane.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "sleeper", "namespace": ns},
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "c", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}],
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                },
            }
        )
        pods.wait_pod(plane, ns, "sleeper", pods.ready)
        print("READY", flush=True)
        while True:
            time.sleep(60)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
