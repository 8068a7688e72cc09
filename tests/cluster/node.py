"""A real single node for the cluster tier: containerd with runc and the CNI bridge plugin (Debian's), a kubelet,
kube-controller-manager and kube-scheduler (built from the same Kubernetes module as the test kube-apiserver).

Everything lives under one run folder and on one bridge of its own (`BRIDGE`, `SUBNET`): containerd's root, state
and socket, the CNI configuration and address pool, the kubelet's root. The node's address is the bridge's, so
pods, the kubelet's server and anything the tests serve to pods (MLflow) live on that bridge, never on another
interface. Before anything starts the host is recorded (`host.Snapshot`) and a janitor process
(`janitor.py`) is started that restores it when the node stops or the test process dies; the node's own
processes die with the test process (PR_SET_PDEATHSIG, as the control plane's do).

What the kubelet needs from containerd here (see ../shared/notes/serving-path.md): `restrict_oom_score_adj`
(no CAP_SYS_RESOURCE: runc cannot lower a sandbox's oom_score_adj), cgroupfs, a local pause image (no registry).
Images go into containerd as docker archives: ours from podman (`load_image`), the pause image written here
from a static Go binary built once into the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.forward import Forwarder
from tests.cluster.host import Snapshot
from tests.controlplane.build import NodePaths, cache_root
from tests.controlplane.plane import ControlPlane, ControlPlaneError, _die_with_parent
from tests.servers import free_port, stop_group

BRIDGE = "sbtest0"
SUBNET = "10.250.0"  # /24; the node and the bridge are .1
NODE_IP = f"{SUBNET}.1"
NODE_NAME = "sbtest-node"
PAUSE_IMAGE = "kind.local/pause:test"
CNI_BIN = Path("/usr/lib/cni")
PAUSE_SOURCE = """package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

// The sandbox of every pod: holds its namespaces until it is told to stop.
func main() {
\tc := make(chan os.Signal, 1)
\tsignal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
\t<-c
}
"""


class NodeError(RuntimeError):
    pass


def _docker_archive(name: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str], out: Path) -> None:
    """A one-layer image as a docker archive (what `ctr images import` reads): `files` are path -> (data, mode)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [name], "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(out, "w") as tar:
        for member, data in (("layer.tar", layer_bytes), (config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def static_binary(name: str, source: str) -> Path:
    """A static Go program built once into the cache (keyed by its source)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:10]
    out = cache_root().parent / "cluster" / f"{name}-{digest}" / name
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "main.go").write_text(source)
    (out.parent / "go.mod").write_text(f"module local.test/{name}\n\ngo 1.26\n")
    env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-buildvcs=false")
    proc = subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(out) + ".tmp", "."],
        cwd=out.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise NodeError(f"building {name} failed: {proc.stderr[-2000:]}")
    Path(str(out) + ".tmp").rename(out)
    return out


class Node:
    """Start with `start()` (or `running()`); `load_image()` moves an image from podman into containerd."""

    def __init__(self, root: Path, plane: ControlPlane, paths: NodePaths) -> None:
        self.root = root
        self.plane = plane
        self.paths = paths
        self.logs = root / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.socket = root / "containerd" / "containerd.sock"
        self.kubelet_port, self.kubelet_health = free_port(), free_port()
        self.timings: dict[str, float] = {}
        self.janitor: subprocess.Popen[bytes] | None = None
        self.forwarder: Forwarder | None = None  # kube-apiserver on the bridge address, for pods

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._check_free()
        self.logs.mkdir(parents=True, exist_ok=True)
        Snapshot.take().save(self.root / "host.json")
        (self.root / "node.json").write_text(json.dumps({"bridge": BRIDGE}))
        self._start_janitor()
        try:
            self._timed("bridge", self._make_bridge)
            self.forwarder = Forwarder((NODE_IP, self.plane.api_port), ("127.0.0.1", self.plane.api_port))
            self._timed("containerd", self._start_containerd)
            self._timed("pause image", self._load_pause)
            self._timed("node rbac", self._rbac)
            self._timed("kubelet", self._start_kubelet)
            self._timed("controllers", self._start_controllers)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> list[str]:
        """Stop every process, then let the janitor restore the host; returns what is still different."""
        for name in reversed(list(self.procs)):
            stop_group(self.procs.pop(name), timeout=10)
        if self.forwarder is not None:
            self.forwarder.close()
            self.forwarder = None
        if self.janitor is None:
            return []
        (self.root / "stop").touch()
        try:
            self.janitor.wait(timeout=180)
        finally:
            self.janitor = None
        done = self.root / "restored.json"
        return list(json.loads(done.read_text())) if done.exists() else ["the janitor wrote no result"]

    def _check_free(self) -> None:
        links = subprocess.run(["ip", "-o", "link", "show", BRIDGE], capture_output=True, check=False)
        if links.returncode == 0:
            raise NodeError(f"{BRIDGE} exists already: another cluster tier is running, or one was not cleaned up")
        routes = subprocess.run(["ip", "route", "show", f"{SUBNET}.0/24"], capture_output=True, text=True, check=False)
        if routes.stdout.strip():
            raise NodeError(f"{SUBNET}.0/24 is routed on this host already: {routes.stdout.strip()}")

    def _start_janitor(self) -> None:
        log = open(self.logs / "janitor.log", "ab")
        self.janitor = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster.janitor", str(self.root), str(os.getpid())],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        log.close()

    def _timed(self, what: str, fn: Any) -> None:
        t = time.monotonic()
        fn()
        self.timings[what] = round(time.monotonic() - t, 2)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env or dict(os.environ),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _wait(self, name: str, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise NodeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                if check():
                    return
            except Exception as e:
                last = e
            time.sleep(0.3)
        raise NodeError(f"{name} not ready within {timeout:.0f}s ({last}):\n{self.log_tail(name)}")

    # ---- pieces --------------------------------------------------------------------------------
    def _make_bridge(self) -> None:
        for argv in (
            ["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE],
            ["ip", "link", "set", BRIDGE, "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True)
        cni = self.root / "cni"
        cni.mkdir()
        conflist = {
            "cniVersion": "1.0.0",
            "name": "sbtest",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": f"{SUBNET}.0/24", "gateway": NODE_IP}]],
                        "dataDir": str(self.root / "cni-ipam"),
                    },
                },
                {"type": "loopback"},
            ],
        }
        (cni / "10-sbtest.conflist").write_text(json.dumps(conflist))

    def _start_containerd(self) -> None:
        base = self.root / "containerd"
        base.mkdir()
        config = f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{base / "ttrpc.sock"}"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.root / "cni"}"
"""
        (base / "config.toml").write_text(config)
        self._spawn("containerd", ["containerd", "--config", str(base / "config.toml"), "--log-level", "warn"])
        self._wait("containerd", lambda: self.ctr("version", check=False).returncode == 0, 60)

    def ctr(self, *args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            ["ctr", "--address", str(self.socket), "-n", "k8s.io", *args],
            input=input,
            capture_output=True,
            timeout=600,
            check=False,
        )
        if check and proc.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
        return proc

    def import_archive(self, archive: Path) -> None:
        self.ctr("images", "import", "--no-unpack=false", str(archive))

    def _load_pause(self) -> None:
        pause = static_binary("pause", PAUSE_SOURCE)
        archive = self.root / "pause.tar"
        _docker_archive(PAUSE_IMAGE, {"pause": (pause.read_bytes(), 0o755)}, ["/pause"], archive)
        self.import_archive(archive)

    def load_image(self, tool: str, image: str) -> None:
        """Move `image` from podman (or docker) into the node's containerd."""
        archive = self.root / (hashlib.sha256(image.encode()).hexdigest()[:12] + ".tar")
        subprocess.run(
            [tool, "save", "--format", "docker-archive", "-o", str(archive), image]
            if tool == "podman"
            else [tool, "save", "-o", str(archive), image],
            check=True,
            capture_output=True,
            timeout=600,
        )
        try:
            self.import_archive(archive)
        finally:
            archive.unlink()

    def _rbac(self) -> None:
        self.kubelet_cert = self.plane.authority.issue("kubelet", f"system:node:{NODE_NAME}", groups=("system:nodes",))
        self.plane.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "sbtest-nodes"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
            }
        )

    def _start_kubelet(self) -> None:
        root = self.root / "kubelet"
        root.mkdir()
        kubeconfig = root / "kubeconfig"
        ca = str(self.plane.ca)
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "t", "cluster": {"server": self.plane.url, "certificate-authority": ca}}],
                    "users": [
                        {
                            "name": "k",
                            "user": {
                                "client-certificate": str(self.kubelet_cert.cert),
                                "client-key": str(self.kubelet_cert.key),
                            },
                        }
                    ],
                    "contexts": [{"name": "k", "context": {"cluster": "t", "user": "k"}}],
                    "current-context": "k",
                }
            )
        )
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.kubelet_health,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.plane.ca)},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": True,
            "failCgroupV1": False,
            "failSwapOn": False,
            "enforceNodeAllocatable": [],
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "serializeImagePulls": False,
            "maxPods": 40,
            "resolvConf": "",
            "registerNode": True,
            "nodeStatusReportFrequency": "10s",
            "shutdownGracePeriod": "0s",
        }
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            [
                str(self.paths.kubelet),
                f"--config={root / 'config.yaml'}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={root / 'root'}",
                f"--cert-dir={root / 'pki'}",
                f"--node-ip={NODE_IP}",
                f"--hostname-override={NODE_NAME}",
                "--v=1",
            ],
        )
        self._wait("kubelet", self._node_ready, 120)

    def _node_ready(self) -> bool:
        out = self.plane.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if out.returncode != 0:
            return False
        conditions = json.loads(out.stdout).get("status", {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _start_controllers(self) -> None:
        kc = str(self.plane.kubeconfig)
        self._spawn(
            "kube-scheduler",
            [
                str(self.paths.kube_scheduler),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )
        self._spawn(
            "kube-controller-manager",
            [
                str(self.paths.kube_controller_manager),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={self.plane.sa.key}",
                f"--root-ca-file={self.plane.ca}",
                "--use-service-account-credentials=false",
            ],
        )
        # The controller manager is up once it has made the default ServiceAccount of a namespace.
        self._wait(
            "kube-controller-manager",
            lambda: (
                self.plane.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0
            ),
            120,
        )


@contextlib.contextmanager
def running(root: Path, plane: ControlPlane, paths: NodePaths) -> Iterator[Node]:
    node = Node(root, plane, paths)
    node.start()
    try:
        yield node
    finally:
        left = node.stop()
        if left:
            raise ControlPlaneError(f"the host is not as it was after the cluster tier: {left}")
