"""A Kubernetes API server stand-in for integration tests: real HTTP/1.1 on 127.0.0.1, in a thread.

`KubeApiServer` serves KServe `inferenceservices` (serving.kserve.io/v1beta1, validated against the real
CRD in ../shared/crds) and core/v1 `events` with kube-apiserver's semantics: 201 with server-set
metadata on create, generateName, 404/409/415/422/401 `Status` bodies, label and field selectors,
PUT with resourceVersion preconditions, merge/JSON patch, server-side apply with field ownership
and conflicts, the status subresource, generation and no-op rules, finalizers, watch, dryRun and
discovery, Table output from the CRD's printer columns, optional bearer token and TLS (enough for
`kubectl get/-l/-w/wait/label/patch/apply --server-side/delete`). Tests steer it through
fault injection (`inject`, `drop`, `delay`), read the request log (`requests`, `count`), and play the
KServe controller through `set_status` or the real client. The registry rules live in store.py.

Where it still departs from a real API server:
- Server-side apply follows the schema's list types (map lists per key, sets per value, lists
  without a list type atomic, as for CRDs), but a merged map list puts the applier's items first,
  in its order (the real order may differ), fields filled in by schema defaults count as the
  applier's, explicit nulls in an apply config are ignored, and managedFields sent by clients are
  ignored (always computed here).
- Strategic merge patch on built-in kinds (events) is treated as a JSON merge patch.
- Validation covers types, required, enum, pattern, lengths, min/max, minItems, list uniqueness and
  the date-time format; no CEL rules (the KServe CRD has none). Admission webhooks are Python hooks
  (`admission=`); `kserve.kserve_webhook` emulates KServe's name rule and deployment-mode rename
  only, not the rest of its defaulting (runtime selection, resources) or validation.
- Events are typed and pruned against the core/v1 Event fields, but only the legacy event rules run.
- No RBAC/impersonation, protobuf, /openapi (kubectl create/apply need --validate=false), Table
  output for events, namespaces as objects (any namespace exists unless `namespaces=` is given),
  deletecollection, ownerReference garbage collection (propagationPolicy is ignored) or bookmarks.
- Watch history is kept in memory until `compact_history()`; a watch without timeoutSeconds lasts
  30-60 minutes as on the real server, or until the server stops. kubectl sends a bearer token only
  over TLS: start the server with `tls=True` for kubectl with a token.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import functools
import ipaddress
import re
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tests.kubeapi.handler import HttpServer
from tests.kubeapi.hooks import Fault, Request
from tests.kubeapi.kinds import EVENTS, Kind, crd_kind
from tests.kubeapi.store import Admission, Obj, Store

ISVC_CRD = "serving.kserve.io_inferenceservices.yaml"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
TEST_MANAGER = "kubeapi-test"


@functools.cache
def _certificate() -> tuple[str, str]:
    """A self-signed certificate (its own CA) for 127.0.0.1 and localhost: (cert PEM path, key PEM path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeapi-standin")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = Path(tempfile.mkdtemp(prefix="kubeapi-tls-"))
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def default_crd_path(repo_root: Path | None = None) -> Path:
    """The shared KServe CRD: ../shared/crds beside the repository checkout."""
    root = repo_root or Path(__file__).resolve().parents[2]
    return root.parent / "shared" / "crds" / ISVC_CRD


class KubeApiServer:
    """The stand-in server. Start it (or use it as a context manager), then point a client at `url`."""

    def __init__(
        self,
        token: str | None = None,
        kinds: Iterable[Kind] | None = None,
        namespaces: Iterable[str] | None = None,
        crd_path: Path | None = None,
        tls: bool = False,
        admission: Iterable[Admission] = (),
    ) -> None:
        self.token = token
        self.tls = tls
        self.ca_file = ""  # with tls: the PEM file clients trust (the server's self-signed certificate)
        if kinds is None:
            kinds = [crd_kind(crd_path or default_crd_path()), EVENTS]
        self.store = Store(kinds, namespaces)
        self.store.admission.extend(admission)  # e.g. tests.kubeapi.kserve.kserve_webhook
        self.errors: list[str] = []  # tracebacks of requests the stand-in itself failed on (its bugs)
        self._log: list[Request] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: HttpServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.port = 0

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> KubeApiServer:
        self._httpd = HttpServer(("127.0.0.1", 0), self)
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        if self.tls:
            cert, key = _certificate()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self._httpd.socket = context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            self.ca_file = cert
            self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="kubeapi", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        with self.store.lock:
            self.store.changed.notify_all()
        self._httpd.shutdown()
        with self._httpd.connections_lock:
            for conn in list(self._httpd.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted so far: with keep-alive, one per client connection-pool slot in use."""
        return self._httpd.opened if self._httpd is not None else 0

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def kubeconfig(self, path: str | Path) -> str:
        """Write a kubeconfig pointing at this server (with the bearer token, if any); return its path."""
        user: dict[str, str] = {"token": self.token} if self.token else {}
        cluster = {"server": self.url}
        if self.ca_file:
            cluster["certificate-authority-data"] = base64.b64encode(Path(self.ca_file).read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeapi", "cluster": cluster}],
            "users": [{"name": "kubeapi", "user": user}],
            "contexts": [
                {"name": "kubeapi", "context": {"cluster": "kubeapi", "user": "kubeapi", "namespace": "default"}}
            ],
            "current-context": "kubeapi",
        }
        Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
        return str(path)

    # ---- kinds and direct object access ------------------------------------------------------------

    def kind(self, name: str) -> Kind:
        """A served kind by plural, singular, kind or short name."""
        for kind in self.store.kinds:
            if name in (kind.plural, kind.singular, kind.kind, *kind.short_names):
                return kind
        raise KeyError(f"no kind {name!r} is served")

    def get_object(self, plural: str, namespace: str, name: str) -> Obj | None:
        return self.store.find(self.kind(plural), namespace, name)

    def objects(self, plural: str, namespace: str | None = None) -> list[Obj]:
        return self.store.items(self.kind(plural), namespace)

    def create_object(self, plural: str, obj: Obj, manager: str = TEST_MANAGER) -> Obj:
        """Create as a client would (validated, server metadata set); raises ApiError on failure."""
        namespace = (obj.get("metadata") or {}).get("namespace", "default")
        return self.store.create(self.kind(plural), namespace, copy.deepcopy(obj), manager).obj

    def set_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> Obj:
        """Replace .status as the controller would through /status (resourceVersion bumps if it changed)."""
        kind = self.kind(plural)
        with self.store.lock:
            body = self.store.get(kind, namespace, name)
            body["status"] = copy.deepcopy(status)
            body["metadata"].pop("resourceVersion", None)
            return self.store.replace(kind, namespace, name, body, TEST_MANAGER, sub="status").obj

    def delete_object(self, plural: str, namespace: str, name: str) -> Obj:
        return self.store.delete(self.kind(plural), namespace, name).obj

    def compact_history(self) -> None:
        """Forget watch history: watches from an older resourceVersion now get 410 Expired."""
        self.store.compact()

    # ---- fault injection ---------------------------------------------------------------------------

    def _add(self, fault: Fault) -> None:
        fault.method = fault.method.upper()
        with self._lock:
            self._faults.append(fault)

    def inject(
        self,
        method: str,
        path: str | re.Pattern[str],
        status: int = 500,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int | None = 1,
    ) -> None:
        """Answer the next `times` matching requests (None: all) with `status` instead of acting.

        `method` is an HTTP method or "*"; `path` a substring of, or a compiled regex searched in, the
        request target (path and query). `body` defaults to a Status of the matching reason.
        """
        self._add(Fault(method, path, "inject", times, status=status, body=body, headers=headers))

    def drop(self, method: str, path: str | re.Pattern[str], times: int | None = 1) -> None:
        """Close the connection of the next `times` matching requests without answering (nothing is done)."""
        self._add(Fault(method, path, "drop", times))

    def delay(self, method: str, path: str | re.Pattern[str], seconds: float, times: int | None = 1) -> None:
        """Wait `seconds` before handling the next `times` matching requests (which then proceed)."""
        self._add(Fault(method, path, "delay", times, seconds=seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_faults(self, method: str, target: str) -> tuple[float, Fault | None]:
        delay, final = 0.0, None
        with self._lock:
            for fault in list(self._faults):
                if not fault.matches(method, target) or (fault.action != "delay" and final is not None):
                    continue
                if fault.action == "delay":
                    delay += fault.seconds
                else:
                    final = fault
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
        return delay, final

    # ---- request log -------------------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._log)

    def count(self, method: str | None = None, path_contains: str | None = None, writes_only: bool = False) -> int:
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path_contains is None or path_contains in r.path)
            and (not writes_only or r.method in WRITE_METHODS)
        )

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, request: Request) -> None:
        with self._lock:
            self._log.append(request)
