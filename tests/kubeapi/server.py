"""A Kubernetes API server stand-in for integration tests: real HTTP/1.1 on 127.0.0.1, in a thread.

`KubeApiServer` serves KServe `inferenceservices` (serving.kserve.io/v1beta1, validated against the real
CRD in ../shared/crds) and core/v1 `events` with kube-apiserver's semantics: 201 with server-set
metadata on create, generateName, 404/409/415/422/401 `Status` bodies, label and field selectors,
PUT with resourceVersion preconditions, merge/JSON patch, server-side apply with field ownership
and conflicts, the status subresource, generation and no-op rules, finalizers, watch, dryRun and
discovery (enough for `kubectl get/-l/-w/patch/apply --server-side/delete`). Tests steer it through
fault injection (`inject`, `drop`, `delay`), read the request log (`requests`, `count`), and play the
KServe controller through `set_status` or the real client. The registry rules live in store.py.

Where it still departs from a real API server:
- Server-side apply tracks ownership per map key, but every list is atomic (the real server merges
  `x-kubernetes-list-type: map` lists such as containers/env per key); defaulted fields are owned
  by the applier; explicit nulls in an apply config are ignored; managedFields in request bodies
  are ignored (the server always computes them).
- Strategic merge patch on built-in kinds (events) is treated as a JSON merge patch.
- No CEL rules (x-kubernetes-validations: none in the KServe CRD), no formats beyond type checks,
  no admission webhooks (KServe's webhook also checks DNS-1035 names, defaults the runtime, etc.).
- Events are not schema-checked or pruned (only the legacy core/v1 event rules and ObjectMeta).
- No RBAC, impersonation, protobuf, Table output (kubectl shows NAME/AGE only), /openapi
  (kubectl create/apply need --validate=false), namespaces as objects (any namespace exists unless
  `namespaces=` is given), deletecollection, ownerReference garbage collection, bookmarks.
- Watch history is kept in memory until `compact_history()`; a watch without timeoutSeconds lasts
  30-60 minutes as on the real server, or until the server stops.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import functools
import ipaddress
import json
import random
import re
import socket
import ssl
import tempfile
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.kubeapi.errors import ApiError, status_body
from tests.kubeapi.store import EVENTS, Kind, Obj, Store, WatchEvent, crd_kind, parse_body
from tests.kubeapi.tables import table

ISVC_CRD = "serving.kserve.io_inferenceservices.yaml"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
TEST_MANAGER = "kubeapi-test"
TABLE_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"


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


@dataclass(frozen=True)
class Request:
    """One logged request: what the client asked and the status it got (0: connection dropped)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    status: int
    seconds: float
    body: bytes = field(default=b"", repr=False)


@dataclass
class Fault:
    method: str
    pattern: str | re.Pattern[str]
    action: str  # "inject" | "drop" | "delay"
    times: int | None
    status: int = 500
    body: Any = None
    headers: dict[str, str] | None = None
    seconds: float = 0.0

    def matches(self, method: str, target: str) -> bool:
        if self.method not in ("*", method):
            return False
        if isinstance(self.pattern, re.Pattern):
            return bool(self.pattern.search(target))
        return self.pattern in target


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: KubeApiServer) -> None:
        self.api = api
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that breaks off (TLS handshake, reset) is not the stand-in's failure; stay quiet."""


class KubeApiServer:
    """The stand-in server. Start it (or use it as a context manager), then point a client at `url`."""

    def __init__(
        self,
        token: str | None = None,
        kinds: Iterable[Kind] | None = None,
        namespaces: Iterable[str] | None = None,
        crd_path: Path | None = None,
        tls: bool = False,
    ) -> None:
        self.token = token
        self.tls = tls
        self.ca_file = ""  # with tls: the PEM file clients trust (the server's self-signed certificate)
        if kinds is None:
            kinds = [crd_kind(crd_path or default_crd_path()), EVENTS]
        self.store = Store(kinds, namespaces)
        self.errors: list[str] = []  # tracebacks of requests the stand-in itself failed on (its bugs)
        self._log: list[Request] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.port = 0

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> KubeApiServer:
        self._httpd = _HttpServer(("127.0.0.1", 0), self)
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms delayed ACKs
    server_version = "kubeapi-standin"
    sys_version = ""
    server: _HttpServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()  # in this connection's thread, not in the accept loop
            self.request.settimeout(None)
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # ---- plumbing ----------------------------------------------------------------------------------

    @property
    def api(self) -> KubeApiServer:
        return self.server.api

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, body: Any, headers: dict[str, str] | list[tuple[str, str]] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._log(code)
        self.send_response(code)
        is_table = isinstance(body, dict) and body.get("kind") == "Table"
        self.send_header("Content-Type", TABLE_TYPE if is_table else "application/json")
        self.send_header("Content-Length", str(len(data)))
        pairs = list(headers.items()) if isinstance(headers, dict) else headers or []
        for key, value in pairs:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _log(self, code: int) -> None:
        self.api._record(
            Request(
                self.command,
                self._path,
                {k: v[0] for k, v in self._query.items()},
                self.headers.get("Content-Type", ""),
                code,
                time.monotonic() - self._started,
                self._body,
            )
        )

    def _dispatch(self) -> None:
        self._started = time.monotonic()
        split = urlsplit(self.path)
        self._path, self._query = split.path, parse_qs(split.query)
        body = self._body = self._read_body()
        delay, fault = self.api._take_faults(self.command, self.path)
        if delay:
            time.sleep(delay)
        if fault is not None and fault.action == "drop":
            self._log(0)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            if fault is not None:
                payload = fault.body if fault.body is not None else status_body(fault.status, "injected failure")
                if isinstance(payload, str):
                    payload = payload.encode()
                self._send(fault.status, payload, fault.headers)
                return
            if self.api.token and self.headers.get("Authorization") != f"Bearer {self.api.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            self._route(body)
        except ApiError as e:
            self._send(e.code, e.status)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            self.api.errors.append(traceback.format_exc())
            self._send(500, status_body(500, "stand-in failure: " + traceback.format_exc(limit=1), "InternalError"))

    def _q(self, name: str) -> str | None:
        values = self._query.get(name)
        return values[0] if values else None

    def _flag(self, name: str) -> bool:
        return (self._q(name) or "").lower() in ("true", "1", "t")

    # ---- routing -----------------------------------------------------------------------------------

    def _route(self, body: bytes) -> None:
        parts = [p for p in self._path.split("/") if p]
        if self.command == "GET" and (discovery := self._discovery(parts)) is not None:
            self._send(200, discovery)
            return
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError.no_route()
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError.no_route()
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else "")
        kind = next(
            (k for k in self.api.store.kinds if (k.group, k.version, k.plural) == (group, version, plural)), None
        )
        if kind is None or (sub and (sub != "status" or not kind.status_subresource)):
            raise ApiError.no_route()
        if kind.namespaced and namespace is None and name is not None:
            raise ApiError.no_route()
        self._verb(kind, namespace or "", name, sub, body, all_namespaces=namespace is None)

    def _verb(self, kind: Kind, namespace: str, name: str | None, sub: str, body: bytes, all_namespaces: bool) -> None:
        store, method = self.api.store, self.command
        dry_run = self._q("dryRun") == "All"
        validation = self._q("fieldValidation")
        manager = self._q("fieldManager") or self.headers.get("User-Agent", "unknown").split("/")[0]
        if len(manager) > 128:
            raise ApiError(422, "fieldManager: Too long: may not be longer than 128", "Invalid")
        if name is None:
            if method == "GET" and self._flag("watch"):
                self._watch(kind, None if all_namespaces else namespace)
            elif method == "GET":
                limit = int(self._q("limit") or 0)
                listed = store.list_objects(
                    kind,
                    None if all_namespaces else namespace,
                    self._q("labelSelector"),
                    self._q("fieldSelector"),
                    limit,
                    self._q("continue"),
                )
                self._send(200, self._maybe_table(kind, listed["items"], listed["metadata"]["resourceVersion"], listed))
            elif method == "POST" and not all_namespaces:
                result = store.create(kind, namespace, parse_body(body), manager, dry_run, validation)
                self._send(result.code, result.obj, _warning_headers(result.warnings))
            else:
                raise ApiError(
                    405, "the server does not allow this method on the requested resource", "MethodNotAllowed"
                )
            return
        if method == "GET":
            obj = store.get(kind, namespace, name)
            self._send(200, self._maybe_table(kind, [obj], obj["metadata"]["resourceVersion"], obj))
        elif method == "PUT":
            result = store.replace(kind, namespace, name, parse_body(body), manager, sub, dry_run, validation)
            self._send(result.code, result.obj, _warning_headers(result.warnings))
        elif method == "PATCH":
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
            apply = content_type == "application/apply-patch+yaml"
            if not apply and self._q("force") is not None:
                message = (
                    'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified for non-apply patch'
                )
                raise ApiError(422, message, "Invalid", {"group": "meta.k8s.io", "kind": "PatchOptions"})
            result = store.patch(
                kind, namespace, name, content_type, body, self._q("fieldManager") if apply else manager,
                sub, self._flag("force"), dry_run, validation,
            )  # fmt: skip
            self._send(result.code, result.obj, _warning_headers(result.warnings))
        elif method == "DELETE" and not sub:
            options = parse_body(body) if body.strip() else None
            self._send(200, store.delete(kind, namespace, name, options, dry_run).obj)
        else:
            raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")

    def _wants_table(self, kind: Kind) -> bool:
        return bool(kind.printer_columns) and "as=Table" in self.headers.get("Accept", "")

    def _maybe_table(self, kind: Kind, objects: list[Obj], resource_version: str, plain: Obj) -> Obj:
        """The Table kubectl asks for (Accept: ...;as=Table), else the plain answer."""
        if not self._wants_table(kind):
            return plain
        return table(objects, kind.printer_columns, resource_version, self._q("includeObject"))

    # ---- discovery ---------------------------------------------------------------------------------

    def _discovery(self, parts: list[str]) -> Obj | None:
        kinds = self.api.store.kinds
        groups: dict[str, list[str]] = {}
        for k in kinds:
            if k.group and k.version not in groups.setdefault(k.group, []):
                groups[k.group].append(k.version)

        def group_doc(name: str) -> Obj:
            versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in groups[name]]
            return {"name": name, "versions": versions, "preferredVersion": versions[0]}

        if parts == ["version"]:
            return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-kubeapi-standin", "platform": "linux/amd64"}
        if parts == ["api"]:
            address = f"127.0.0.1:{self.api.port}"
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
            }
        if parts == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_doc(g) for g in groups]}
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            return {"kind": "APIGroup", "apiVersion": "v1", **group_doc(parts[1])}
        if parts == ["api", "v1"]:
            group_version, served = "v1", [k for k in kinds if not k.group]
        elif len(parts) == 3 and parts[0] == "apis":
            group_version, served = (
                f"{parts[1]}/{parts[2]}",
                [k for k in kinds if (k.group, k.version) == (parts[1], parts[2])],
            )
            if not served:
                return None
        else:
            return None
        resources = []
        for k in served:
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            resources.append(
                {
                    "name": k.plural,
                    "singularName": k.singular,
                    "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": verbs,
                    "shortNames": list(k.short_names),
                }
            )
            if k.status_subresource:
                resources.append(
                    {
                        "name": f"{k.plural}/status",
                        "singularName": "",
                        "namespaced": k.namespaced,
                        "kind": k.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}

    # ---- watch -------------------------------------------------------------------------------------

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, kind: Kind, namespace: str | None) -> None:
        store = self.api.store
        matches = store.matcher(kind, self._q("labelSelector"), self._q("fieldSelector"))
        timeout = float(self._q("timeoutSeconds") or random.uniform(1800, 3600))
        deadline = time.monotonic() + timeout
        wanted_rv = self._q("resourceVersion")
        initial: list[tuple[str, Obj]] = []
        expired: Obj | None = None
        with store.lock:
            if wanted_rv in (None, "", "0"):
                cursor = store.rv
                initial = [("ADDED", o) for o in store.items(kind, namespace) if matches(o)]
            else:
                try:
                    cursor = int(wanted_rv)
                except ValueError:
                    raise ApiError.bad_request(f"invalid resource version: {wanted_rv}") from None
                if cursor < store.history_floor:
                    expired = ApiError(
                        410, f"too old resource version: {cursor} ({store.history_floor})", "Expired"
                    ).status
        self._log(200)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if expired is not None:
                self._chunk(json.dumps({"type": "ERROR", "object": expired}).encode() + b"\n")
            else:
                for type_, obj in initial:
                    shown_obj = self._maybe_table(kind, [obj], obj["metadata"]["resourceVersion"], obj)
                    self._chunk(json.dumps({"type": type_, "object": shown_obj}).encode() + b"\n")
                while not self.api.stopping and (left := deadline - time.monotonic()) > 0:
                    with store.lock:
                        events = [e for e in store.history if e.rv > cursor]
                        if not events:
                            store.changed.wait(min(left, 0.5))
                            continue
                    cursor = events[-1].rv
                    for event in events:
                        shown = _watch_view(event, kind, namespace, matches)
                        if shown is not None:
                            obj = self._maybe_table(kind, [event.obj], str(event.rv), event.obj)
                            self._chunk(json.dumps({"type": shown, "object": obj}).encode() + b"\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True


def _watch_view(event: WatchEvent, kind: Kind, namespace: str | None, matches: Any) -> str | None:
    """How a filtered watch shows an event: objects entering or leaving the selection are ADDED/DELETED."""
    if event.kind != kind or namespace not in (None, event.namespace):
        return None
    now_in = event.type != "DELETED" and matches(event.obj)
    was_in = event.prev is not None and matches(event.prev)
    if event.type == "DELETED":
        return "DELETED" if was_in else None
    if now_in and was_in:
        return "MODIFIED"
    if now_in:
        return "ADDED"
    return "DELETED" if was_in else None


def _warning_headers(warnings: list[str]) -> list[tuple[str, str]]:
    """One `Warning: 299 - "text"` header per warning, as kube-apiserver sends them."""
    return [("Warning", "299 - " + json.dumps(w)) for w in warnings]
