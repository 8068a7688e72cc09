"""Knative Serving for real on the cluster tier's node: controller, webhook, autoscaler and activator as pods,
queue-proxy as every revision's sidecar, all from the binaries built from knative.dev/serving (the version KServe
builds against), each wrapped into a one-layer image here (no registry) and moved into the node's containerd.

Installed from the module's own YAML (config/core, and the networking and caching CRDs and `config-network` of the
modules it requires), changed only where this node differs from a cluster: images are the local ones
(`kind.local/`, which Knative never resolves to a digest), pods reach kube-apiserver on the bridge address (its
forwarder), there is no cluster DNS (the activator finds the autoscaler through `hostAliases`), no resource
requests (two cores), no anti-affinity (one node). No ingress runs: a request reaches a revision the way an
ingress sends it, to the activator with the `Knative-Serving-Namespace` and `Knative-Serving-Revision` headers.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.node import NODE_IP, Node, _docker_archive
from tests.controlplane.build import KnativePaths
from tests.controlplane.plane import ControlPlane

NAMESPACE = "knative-serving"
COMPONENTS = ("controller", "webhook", "autoscaler", "activator")
QUEUE_IMAGE = "kind.local/knative-queue:test"
INGRESS_CLASS = "sbtest.ingress.networking.knative.dev"


def image(name: str) -> str:
    return f"kind.local/knative-{name}:test"


def _module_dir(wrapper: Path, module: str) -> Path:
    out = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", module],
        cwd=wrapper,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"},
    )
    return Path(out.stdout.strip())


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


class KnativeServing:
    def __init__(self, plane: ControlPlane, node: Node, paths: KnativePaths) -> None:
        self.plane, self.node, self.paths = plane, node, paths
        wrapper = Path(__file__).resolve().parents[1] / "controlplane" / "go" / "knative"
        self.networking = _module_dir(wrapper, "knative.dev/networking")
        self.caching = _module_dir(wrapper, "knative.dev/caching")
        self.core = paths.serving_dir / "config" / "core"

    def install(self) -> None:
        self._images()
        crds = sorted((self.core / "300-resources").glob("*.yaml"))
        crds += [self.networking / "config" / f for f in ("certificate.yaml", "ingress.yaml", "serverlessservice.yaml")]
        crds += [self.networking / "config" / "domain-claim.yaml", self.caching / "config" / "image.yaml"]
        for f in crds:
            self.plane.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=test-setup", f"-f={f}")
        self.plane._wait("kube-apiserver", self.plane._crds_established, 60)
        base = [self.core / "100-namespace.yaml", self.core / "200-serviceaccount.yaml"]
        base += sorted((self.core / "200-roles").glob("*.yaml"))
        for f in base:
            self.plane.kubectl("apply", "--server-side", "--field-manager=test-setup", "-f", str(f))
        self.plane.apply(self._configmaps())
        self.plane.apply([d for f in sorted((self.core / "webhooks").glob("*.yaml")) for d in _docs(f)])
        self._deploy("autoscaler")
        autoscaler_ip = self._pod_ip("autoscaler")
        for name in ("controller", "webhook"):
            self._deploy(name)
        self._deploy("activator", autoscaler_ip=autoscaler_ip)
        for name in COMPONENTS:
            self.wait_available(name)

    # ---- pieces --------------------------------------------------------------------------------
    def _images(self) -> None:
        for name, binary in self.paths.binaries.items():
            ref = QUEUE_IMAGE if name == "queue-proxy" else image(name)
            archive = self.node.root / f"knative-{name}.tar"
            _docker_archive(ref, {name: (binary.read_bytes(), 0o755)}, [f"/{name}"], archive)
            self.node.import_archive(archive)
            archive.unlink()

    def _configmaps(self) -> list[dict[str, Any]]:
        docs = [d for f in sorted((self.core / "configmaps").glob("*.yaml")) for d in _docs(f)]
        docs += _docs(self.networking / "config" / "config-network.yaml")
        patch = {
            "config-deployment": {
                "queue-sidecar-image": QUEUE_IMAGE,
                "registries-skipping-tag-resolving": "kind.local,ko.local,dev.local",
                "queue-sidecar-cpu-request": "10m",
                # A revision whose container keeps exiting is failed when its Deployment changes (or the next
                # resync): its progress deadline (10 min by default) is what changes it for sure.
                "progress-deadline": "60s",
            },
            "config-network": {"ingress-class": INGRESS_CLASS},
            "config-domain": {"example.com": ""},
            # The tests wait for scale to zero: the shortest windows Knative accepts. The activator stays in the
            # path (target-burst-capacity -1): before scaling to zero the autoscaler otherwise checks that it is,
            # through the revision's Service name, and this node has no cluster DNS or kube-proxy.
            "config-autoscaler": {
                "stable-window": "6s",
                "scale-to-zero-grace-period": "6s",
                "scale-to-zero-pod-retention-period": "0s",
                "target-burst-capacity": "-1",
            },
        }
        for d in docs:
            d["metadata"].pop("annotations", None)
            name = d["metadata"]["name"]
            if name in patch:
                d["data"] = {**{k: v for k, v in (d.get("data") or {}).items() if k != "_example"}, **patch[name]}
        return docs

    def _deploy(self, name: str, autoscaler_ip: str = "") -> None:
        docs = _docs(self.core / "deployments" / f"{name}.yaml")
        for d in docs:
            if d["kind"] != "Deployment":
                continue
            spec = d["spec"]["template"]["spec"]
            spec.pop("affinity", None)
            spec.pop("topologySpreadConstraints", None)
            if autoscaler_ip:
                spec["hostAliases"] = [
                    {
                        "ip": autoscaler_ip,
                        "hostnames": [f"autoscaler.{NAMESPACE}.svc.cluster.local", f"autoscaler.{NAMESPACE}.svc"],
                    }
                ]
            for c in spec["containers"]:
                c["image"] = image(name)
                c["imagePullPolicy"] = "Never"
                c.pop("resources", None)
                c["env"] = [e for e in c.get("env") or [] if not e["name"].startswith("KUBERNETES_SERVICE_")]
                c["env"] += [
                    {"name": "KUBERNETES_SERVICE_HOST", "value": NODE_IP},
                    {"name": "KUBERNETES_SERVICE_PORT", "value": str(self.plane.api_port)},
                ]
        self.plane.apply(docs)

    def _pod_ip(self, app: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.plane.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"app={app}", "-o", "json").stdout
            for item in json.loads(out)["items"]:
                ip = (item.get("status") or {}).get("podIP")
                if ip:
                    return str(ip)
            time.sleep(0.5)
        raise TimeoutError(f"no {app} pod got an address in {timeout}s:\n{self.describe()}")

    def wait_available(self, name: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.plane.kubectl("get", "deployment", name, "-n", NAMESPACE, "-o", "json", check=False)
            if out.returncode == 0:
                status = json.loads(out.stdout).get("status") or {}
                if status.get("availableReplicas", 0) >= 1:
                    return
            time.sleep(1)
        raise TimeoutError(f"Knative's {name} not available in {timeout}s:\n{self.describe()}")

    def describe(self) -> str:
        pods = self.plane.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False).stdout
        events = self.plane.kubectl("get", "events", "-n", NAMESPACE, check=False).stdout[-3000:]
        logs = ""
        for name in COMPONENTS:
            tail = self.plane.kubectl("logs", f"deployment/{name}", "-n", NAMESPACE, "--tail=15", check=False)
            logs += f"--- {name}\n{tail.stdout}{tail.stderr}"
        return f"{pods}\n{events}\n{logs[-6000:]}"
