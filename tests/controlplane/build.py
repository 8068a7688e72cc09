"""Builds the test control plane from the Go module proxy: etcd, kube-apiserver and kubectl, the KServe manager;
and for the cluster tier (tests/cluster) the node (kubelet, kube-controller-manager, kube-scheduler, from the same
Kubernetes module as kube-apiserver) and Knative Serving (controller, webhook, autoscaler, activator, queue-proxy,
from the knative.dev/serving version KServe builds against).

Each component is a wrapper module in `tests/controlplane/go/<wrapper>/` whose go.mod and go.sum pin the upstream
module (and, for kube-apiserver and KServe, the `replace`/`exclude` directives `go install pkg@version` refuses).
The version is read from that go.mod, so it is stated once. Binaries land outside the repository in
`$SERVICE_BUILDER_CACHE` (default `~/.cache/service-builder`) under `controlplane/<name>-<version>-<go.sum hash>/`;
a warm call only checks that they are there. Upstream YAML (CRDs, KServe's ConfigMap and webhooks, Knative's CRDs)
is read from the Go module cache, never committed: `paths.json` beside the binaries records where.

`python -m tests.controlplane.build` (what `make controlplane` runs) builds what is missing and prints the paths;
`--no-cluster` leaves out the cluster tier's node and Knative. Builds run at nice 10.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
WRAPPERS = HERE / "go"


@dataclass(frozen=True)
class Component:
    name: str
    module: str  # the upstream module the wrapper requires; its version is the component's version
    binaries: dict[str, str]  # binary name -> Go package
    stamp: bool = False  # version-stamp k8s.io/component-base (kube-apiserver's /version, kubectl version)
    dirs: tuple[str, ...] = ()  # modules whose source folder the tests read YAML from
    wrapper: str = ""  # the wrapper module's folder under go/ (default: the name)

    @property
    def folder(self) -> Path:
        return WRAPPERS / (self.wrapper or self.name)


COMPONENTS = (
    Component("etcd", "go.etcd.io/etcd/server/v3", {"etcd": "go.etcd.io/etcd/server/v3"}),
    Component(
        "kube",
        "k8s.io/kubernetes",
        {"kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver", "kubectl": "k8s.io/kubernetes/cmd/kubectl"},
        stamp=True,
    ),
    Component(
        "kserve",
        "github.com/kserve/kserve",
        {"kserve-manager": "github.com/kserve/kserve/cmd/manager"},
        dirs=("github.com/kserve/kserve", "knative.dev/serving"),
    ),
)

CLUSTER_COMPONENTS = (
    Component(
        "node",
        "k8s.io/kubernetes",
        {
            "kubelet": "k8s.io/kubernetes/cmd/kubelet",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        },
        stamp=True,
        wrapper="kube",
    ),
    Component(
        "knative",
        "knative.dev/serving",
        {
            name: f"knative.dev/serving/cmd/{package}"
            for name, package in (
                ("knative-controller", "controller"),
                ("knative-webhook", "webhook"),
                ("knative-autoscaler", "autoscaler"),
                ("knative-activator", "activator"),
                ("queue-proxy", "queue"),
            )
        },
        dirs=("knative.dev/serving",),
    ),
)


def cache_root() -> Path:
    return Path(os.environ.get("SERVICE_BUILDER_CACHE") or Path.home() / ".cache" / "service-builder") / "controlplane"


def version(c: Component) -> str:
    """The version the wrapper's go.mod requires of the upstream module."""
    text = (c.folder / "go.mod").read_text()
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(c.module)}\s+(v\S+)", text, re.M)
    if not m:
        raise RuntimeError(f"{c.folder / 'go.mod'} does not require {c.module}")
    return m.group(1)


def target(c: Component) -> Path:
    digest = hashlib.sha256()
    for f in ("go.mod", "go.sum"):
        digest.update((c.folder / f).read_bytes())
    return cache_root() / f"{c.name}-{version(c)}-{digest.hexdigest()[:10]}"


def _go(args: list[str], cwd: Path, log: list[str]) -> str:
    env = dict(os.environ, GOFLAGS="-mod=readonly -buildvcs=false", GOTOOLCHAIN="local", CGO_ENABLED="0")
    start = time.monotonic()
    proc = subprocess.run(
        ["nice", "-n", "10", "go", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    log.append(f"go {' '.join(args[:2])} ({cwd.name}): {time.monotonic() - start:.1f}s")
    if proc.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} in {cwd} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def _ldflags(c: Component) -> str:
    if not c.stamp:
        return "-s -w"
    v = version(c)
    major, minor = v.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return (
        f"-s -w -X {pkg}.gitVersion={v} -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor} -X {pkg}.gitTreeState=clean"
    )


def _complete(c: Component, out: Path) -> bool:
    paths = out / "paths.json"
    if not paths.is_file() or not all((out / b).is_file() for b in c.binaries):
        return False
    return all(Path(d).is_dir() for d in json.loads(paths.read_text()).get("dirs", {}).values())


def build(c: Component, log: list[str]) -> Path:
    """Build `c` into its cache folder unless it is complete there already; returns the folder."""
    out = target(c)
    if _complete(c, out):
        return out
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worktree or test session may be building the same thing
        if _complete(c, out):
            return out
        wrapper = c.folder
        # First, the whole graph from the proxy: a refusal shows here, with the module it concerns.
        _go(["mod", "download", "-x"] if os.environ.get("GO_DEBUG_DOWNLOAD") else ["mod", "download"], wrapper, log)
        for binary, package in c.binaries.items():
            tmp = out / f".{binary}.tmp"
            _go(["build", "-trimpath", "-pgo=off", "-ldflags", _ldflags(c), "-o", str(tmp), package], wrapper, log)
            tmp.rename(out / binary)
        dirs = {}
        for module in c.dirs:
            dirs[module] = _go(["list", "-m", "-f", "{{.Dir}}", module], wrapper, log).strip()
        (out / "paths.json").write_text(json.dumps({"version": version(c), "dirs": dirs}, indent=2))
    return out


@dataclass(frozen=True)
class Paths:
    """Where the built control plane is: binaries and the upstream module folders the tests read YAML from."""

    etcd: Path
    kube_apiserver: Path
    kubectl: Path
    kserve_manager: Path
    kserve_dir: Path
    knative_serving_dir: Path
    versions: dict[str, str]


def ensure(log: list[str] | None = None) -> Paths:
    log = [] if log is None else log
    out = {c.name: build(c, log) for c in COMPONENTS}
    dirs = json.loads((out["kserve"] / "paths.json").read_text())["dirs"]
    return Paths(
        etcd=out["etcd"] / "etcd",
        kube_apiserver=out["kube"] / "kube-apiserver",
        kubectl=out["kube"] / "kubectl",
        kserve_manager=out["kserve"] / "kserve-manager",
        kserve_dir=Path(dirs["github.com/kserve/kserve"]),
        knative_serving_dir=Path(dirs["knative.dev/serving"]),
        versions={c.name: version(c) for c in COMPONENTS},
    )


@dataclass(frozen=True)
class NodePaths:
    """The cluster tier's node binaries (same Kubernetes module and version as kube-apiserver)."""

    kubelet: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    version: str


@dataclass(frozen=True)
class KnativePaths:
    """Knative Serving's binaries (controller, webhook, autoscaler, activator, queue-proxy) and module folder."""

    binaries: dict[str, Path]
    serving_dir: Path
    version: str


def _component(name: str) -> Component:
    return next(c for c in CLUSTER_COMPONENTS if c.name == name)


def ensure_node(log: list[str] | None = None) -> NodePaths:
    c = _component("node")
    out = build(c, [] if log is None else log)
    return NodePaths(
        kubelet=out / "kubelet",
        kube_controller_manager=out / "kube-controller-manager",
        kube_scheduler=out / "kube-scheduler",
        version=version(c),
    )


def ensure_knative(log: list[str] | None = None) -> KnativePaths:
    c = _component("knative")
    out = build(c, [] if log is None else log)
    dirs = json.loads((out / "paths.json").read_text())["dirs"]
    return KnativePaths(
        binaries={b.removeprefix("knative-"): out / b for b in c.binaries},
        serving_dir=Path(dirs["knative.dev/serving"]),
        version=version(c),
    )


def main(argv: list[str] | None = None) -> int:
    start = time.monotonic()
    log: list[str] = []
    args = sys.argv[1:] if argv is None else argv
    cluster = "--no-cluster" not in args
    try:
        paths = ensure(log)
        versions = dict(paths.versions)
        if cluster:
            versions["node"] = ensure_node(log).version
            versions["knative"] = ensure_knative(log).version
    except RuntimeError as e:
        print(f"controlplane: {e}", file=sys.stderr)
        return 1
    for line in log:
        print(f"controlplane: {line}")
    summary = " ".join(f"{k} {v}" for k, v in versions.items())
    print(f"controlplane: {summary} ready in {time.monotonic() - start:.1f}s under {cache_root()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
