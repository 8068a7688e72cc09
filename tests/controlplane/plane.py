"""A real Kubernetes control plane on 127.0.0.1 for the tests: etcd, kube-apiserver (RBAC, ServiceAccount
token signing, an admin client certificate) and the KServe controller manager out of cluster, with KServe's
own defaulting and validating webhooks registered by URL.

What it installs, all read from the Go module cache (`build.Paths`): KServe's CRDs (`config/crd/full`), the
real Knative Serving CRDs of the knative.dev/serving version KServe builds against, Istio's VirtualService CRD
from KServe's test folder, KServe's `inferenceservice-config` ConfigMap, `knative-serving/config-autoscaler`,
the `kserve-mlserver` ClusterServingRuntime, and the webhook configurations of `config/webhook`.

Knative itself does not run (no kubelet, no pods): tests play it by writing the status of the Knative Service
KServe creates (`knative.py`), as KServe's own controller tests do. One plane per test session; tests isolate
by namespace. `stop()` ends every process it started.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane import pki
from tests.controlplane.build import Paths, ensure
from tests.servers import free_port, stop_group

ISVC_WEBHOOKS = ("inferenceservice.kserve-webhook-server.defaulter", "inferenceservice.kserve-webhook-server.validator")
KNATIVE_CRDS = ("service.yaml", "configuration.yaml", "revision.yaml", "route.yaml")


class ControlPlaneError(RuntimeError):
    pass


class ControlPlane:
    """Start with `start()` (or use `running()`); `url`, `ca`, `kubeconfig` and `kubectl()` for clients."""

    def __init__(self, root: Path, paths: Paths | None = None, *, node_ip: str = "") -> None:
        self.root = root
        # A node on its own bridge will join (tests/cluster): kube-apiserver gets a client certificate towards its
        # kubelet, its serving certificate names the bridge address (pods reach it there, through a forwarder),
        # ServiceAccount tokens are mounted into pods, and Services' webhooks are called on their endpoints (no
        # kube-proxy).
        self.node_ip = node_ip
        self.paths = paths or ensure()
        self.pki_dir = root / "pki"
        self.logs = root / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.etcd_port, self.peer_port, self.api_port = free_port(), free_port(), free_port()
        self.webhook_port, self.probe_port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.api_port}"
        self.kubeconfig = root / "admin.kubeconfig"
        self.timings: dict[str, float] = {}

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self._timed("pki", self._make_pki)
            self._timed("etcd", self._start_etcd)
            self._timed("kube-apiserver", self._start_apiserver)
            self._timed("install", self._install)
            self._timed("kserve-manager", self._start_manager)
            self._timed("webhooks", self._register_webhooks)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            stop_group(self.procs.pop(name), timeout=10)

    def _timed(self, what: str, fn: Any) -> None:
        t = time.monotonic()
        fn()
        self.timings[what] = round(time.monotonic() - t, 2)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env or dict(os.environ),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _wait(self, name: str, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                if check():
                    return
            except Exception as e:
                last = e
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} not ready within {timeout:.0f}s ({last}):\n{self.log_tail(name)}")

    # ---- pieces --------------------------------------------------------------------------------
    def _make_pki(self) -> None:
        ca = pki.Authority(self.pki_dir)
        self.ca = ca.cert
        node = (self.node_ip,) if self.node_ip else ()
        self.serving = ca.issue("apiserver", "kube-apiserver", serving=True, ips=node)
        self.admin = ca.issue("admin", "admin", groups=("system:masters",))
        self.webhook = ca.issue("webhook", "kserve-webhook-server", serving=True)
        self.kubelet_client = ca.issue("kubelet-client", "kube-apiserver-kubelet-client", groups=("system:masters",))
        self.authority = ca
        self.sa = pki.signing_key(self.pki_dir)
        self._write_kubeconfig()

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url, "certificate-authority": str(self.ca)}}],
            "users": [
                {
                    "name": "admin",
                    "user": {"client-certificate": str(self.admin.cert), "client-key": str(self.admin.key)},
                }
            ],
            "contexts": [{"name": "admin", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "admin",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn(
            "etcd",
            [
                str(self.paths.etcd),
                "--name=test",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--listen-metrics-urls=",
                "--unsafe-no-fsync",
                "--max-request-bytes=10485760",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: _get(f"{client}/health").get("health") == "true", 30)

    def _start_apiserver(self) -> None:
        p = self.pki_dir
        self._spawn(
            "kube-apiserver",
            [
                str(self.paths.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={p}",
                f"--tls-cert-file={self.serving.cert}",
                f"--tls-private-key-file={self.serving.key}",
                f"--client-ca-file={self.ca}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer=https://127.0.0.1:{self.api_port}",
                f"--service-account-key-file={self.sa.cert}",
                f"--service-account-signing-key-file={self.sa.key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                *([] if self.node_ip else ["--disable-admission-plugins=ServiceAccount"]),
                "--allow-privileged=true",
                "--profiling=false",
                "--endpoint-reconciler-type=none",
                *self._node_args(),
            ],
        )
        ctx = ssl.create_default_context(cafile=str(self.ca))
        self._wait("kube-apiserver", lambda: _get(f"{self.url}/readyz", ctx, raw=True) == "ok", 90)

    def _node_args(self) -> list[str]:
        if not self.node_ip:
            return []
        return [
            f"--kubelet-client-certificate={self.kubelet_client.cert}",
            f"--kubelet-client-key={self.kubelet_client.key}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--enable-aggregator-routing=true",
        ]

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The real kubectl (built with kube-apiserver) as the admin."""
        proc = subprocess.run(
            [str(self.paths.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def apply(self, docs: list[dict[str, Any]] | dict[str, Any]) -> None:
        """Server-side apply as the admin (field manager `test-setup`)."""
        items = docs if isinstance(docs, list) else [docs]
        self.kubectl("apply", "--server-side", "--field-manager=test-setup", "-f", "-", input=yaml.safe_dump_all(items))

    def _install(self) -> None:
        k = self.paths.kserve_dir
        files = sorted((k / "config/crd/full").glob("serving.kserve.io_*.yaml"))
        files += [self.paths.knative_serving_dir / "config/core/300-resources" / f for f in KNATIVE_CRDS]
        files.append(k / "test/crds/istio_virtualservice.yaml")
        for f in files:
            self.kubectl("apply", "--server-side", "--field-manager=test-setup", "-f", str(f))
        self._wait("kube-apiserver", self._crds_established, 60)
        namespaces = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ("kserve", "knative-serving")
        ]
        self.apply(namespaces)
        self.apply(inferenceservice_config(k / "config/configmap/inferenceservice.yaml"))
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "config-autoscaler", "namespace": "knative-serving"},
            }
        )
        self.kubectl(
            "apply",
            "--server-side",
            "--field-manager=test-setup",
            "-f",
            str(k / "config/runtimes/kserve-mlserver.yaml"),
        )

    def _crds_established(self) -> bool:
        # Not `kubectl wait`: it fails outright on a CRD whose status has no conditions yet.
        crds = json.loads(self.kubectl("get", "crd", "-o", "json").stdout)["items"]
        return bool(crds) and all(
            any(
                c["type"] == "Established" and c["status"] == "True"
                for c in (crd.get("status") or {}).get("conditions") or []
            )
            for crd in crds
        )

    def _start_manager(self) -> None:
        tmp = self.root / "tmp"
        certs = tmp / "k8s-webhook-server" / "serving-certs"
        certs.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.webhook.cert, certs / "tls.crt")
        shutil.copy(self.webhook.key, certs / "tls.key")
        env = dict(os.environ, POD_NAMESPACE="kserve", TMPDIR=str(tmp), KUBECONFIG=str(self.kubeconfig))
        self._spawn(
            "kserve-manager",
            [
                str(self.paths.kserve_manager),
                "--metrics-addr=0",
                f"--health-probe-addr=127.0.0.1:{self.probe_port}",
                f"--webhook-port={self.webhook_port}",
            ],
            env=env,
        )
        self._wait("kserve-manager", lambda: _get(f"http://127.0.0.1:{self.probe_port}/readyz", raw=True) == "ok", 90)

    def _register_webhooks(self) -> None:
        source = self.paths.kserve_dir / "config/webhook/manifests.yaml"
        ca = base64.b64encode(self.ca.read_bytes()).decode()
        docs = []
        for doc in yaml.safe_load_all(source.read_text()):
            if not doc or doc.get("kind") not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
                continue
            hooks = [h for h in doc.get("webhooks") or [] if h.get("name") in ISVC_WEBHOOKS]
            if not hooks:
                continue
            for h in hooks:
                path = h["clientConfig"]["service"]["path"]
                h["clientConfig"] = {"url": f"https://127.0.0.1:{self.webhook_port}{path}", "caBundle": ca}
            doc["metadata"] = {"name": doc["metadata"]["name"]}
            doc["webhooks"] = hooks
            docs.append(doc)
        if len(docs) != 2:
            raise ControlPlaneError(f"expected KServe's two InferenceService webhooks in {source}, found {len(docs)}")
        self.apply(docs)

    # ---- clients -------------------------------------------------------------------------------
    def api_client(self, token: str | None = None) -> Any:
        """A `kubernetes.client.ApiClient`: the admin (client certificate), or a bearer `token`."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.ssl_ca_cert = str(self.ca)
        if token:
            cfg.api_key = {"authorization": token}
            cfg.api_key_prefix = {"authorization": "Bearer"}
        else:
            cfg.cert_file = str(self.admin.cert)
            cfg.key_file = str(self.admin.key)
        return client.ApiClient(cfg)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, however it dies (Linux PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def inferenceservice_config(path: Path) -> dict[str, Any]:
    """KServe's own ConfigMap, set up as `make e2e` sets it for Knative with Kourier: no Istio virtual host, so the
    InferenceService URL is the Knative route's (`<isvc>-predictor.<ns>.<domain>`)."""
    doc = next(d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "ConfigMap")
    ingress = json.loads(doc["data"]["ingress"])
    ingress["disableIstioVirtualHost"] = True
    doc["data"]["ingress"] = json.dumps(ingress)
    return doc


def _get(url: str, ctx: ssl.SSLContext | None = None, raw: bool = False) -> Any:
    with urllib.request.urlopen(url, timeout=3, context=ctx) as r:
        body = r.read().decode()
    return body if raw else json.loads(body)


@contextlib.contextmanager
def running(root: Path, paths: Paths | None = None, *, node_ip: str = "") -> Iterator[ControlPlane]:
    plane = ControlPlane(root, paths, node_ip=node_ip)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()
