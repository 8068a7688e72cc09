"""HTTP side of the stand-in: routing, verbs, discovery, Table answers and watch streams.

`HttpServer` is a ThreadingHTTPServer speaking HTTP/1.1 with keep-alive (one thread per connection);
`Handler` turns each request into a Store operation (store.py), applies the faults and records the
request through the owning `KubeApiServer` (server.py).
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import ssl
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from tests.kubeapi.errors import ApiError, status_body
from tests.kubeapi.hooks import Request
from tests.kubeapi.kinds import Kind
from tests.kubeapi.store import Obj, WatchEvent, parse_body
from tests.kubeapi.tables import table

if TYPE_CHECKING:
    from tests.kubeapi.server import KubeApiServer

TABLE_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: KubeApiServer) -> None:
        self.api = api
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.opened = 0  # connections accepted so far (keep-alive reuses one per client thread)
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that breaks off (TLS handshake, reset) is not the stand-in's failure; stay quiet."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms delayed ACKs
    server_version = "kubeapi-standin"
    sys_version = ""
    server: HttpServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()  # in this connection's thread, not in the accept loop
            self.request.settimeout(None)
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)
            self.server.opened += 1

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
