"""A fault-injecting HTTP proxy in front of the real kube-apiserver: the one stand-in the tests keep.

The code under test talks plain HTTP to `proxy.url`; every request is forwarded unchanged (its bearer token
included) to the real API server over TLS, and the real answer is returned. Rules can replace an answer
before it reaches the server: a status (500, 429 with `Retry-After`, 409, 403 ...), a delay, or a dropped
connection. It records every request (method, path) so tests can count API calls and writes. It implements
no API-server behaviour of its own.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "host"})


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    status: int = 0  # answer with this status instead of forwarding (0: forward)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (or before forwarding)
    drop: bool = False  # close the connection without an answer
    times: int | None = 1  # how many requests it applies to; None: until cleared

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method)) and bool(self.path.search(path))


class FaultProxy:
    """Start with `start()`; `inject()`, `drop()`, `slow()`, `clear_faults()`, `count()`, `reset_log()`."""

    def __init__(self, upstream: str, ca: Path) -> None:
        self.upstream = urlsplit(upstream)
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.rules: list[Rule] = []
        self.log: list[list[Any]] = []  # [method, path, status]: logged on arrival; status 0 until answered or dropped
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- faults --------------------------------------------------------------------------------
    def inject(
        self,
        method: str,
        path: str | re.Pattern[str],
        status: int,
        *,
        headers: dict[str, str] | None = None,
        times: int | None = 1,
        delay: float = 0.0,
    ) -> None:
        self._add(Rule(method, _pattern(path), status=status, headers=headers or {}, times=times, delay=delay))

    def drop(self, method: str, path: str | re.Pattern[str], *, times: int | None = 1) -> None:
        self._add(Rule(method, _pattern(path), drop=True, times=times))

    def slow(self, method: str, path: str | re.Pattern[str], seconds: float, *, times: int | None = 1) -> None:
        self._add(Rule(method, _pattern(path), delay=seconds, times=times))

    def clear_faults(self) -> None:
        with self.lock:
            self.rules.clear()

    def _add(self, rule: Rule) -> None:
        with self.lock:
            self.rules.append(rule)

    def _take(self, method: str, path: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self.rules.remove(rule)
                    return rule
        return None

    # ---- the request log -----------------------------------------------------------------------
    def count(self, method: str | None = None, path: str | None = None, *, writes_only: bool = False) -> int:
        with self.lock:
            return sum(
                1
                for m, p, _ in self.log
                if (method is None or m == method) and (path is None or path in p) and (not writes_only or m in WRITES)
            )

    def reset_log(self) -> None:
        with self.lock:
            self.log.clear()

    # ---- forwarding ----------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                entry = proxy._record(self.command, path)
                rule = proxy._take(self.command, path)
                if rule and rule.delay:
                    time.sleep(rule.delay)
                if rule and rule.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                if rule and rule.status:
                    entry[2] = rule.status
                    self._answer(rule.status, _status_body(rule.status), {**rule.headers})
                    return
                status, headers, payload = proxy._forward(self.command, self.path, dict(self.headers), body)
                entry[2] = status
                try:
                    self._answer(status, payload, headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a slow answer): what the server did stands

            def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                headers.setdefault("Content-Type", "application/json")
                for k, v in headers.items():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        return Handler

    def _record(self, method: str, path: str) -> list[Any]:
        entry: list[Any] = [method, path, 0]
        with self.lock:
            self.log.append(entry)
        return entry

    def _forward(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPSConnection(
            self.upstream.hostname or "127.0.0.1", self.upstream.port, context=self.ctx, timeout=60
        )
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP}
            conn.request(method, target, body=body or None, headers=sent)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()


def _pattern(path: str | re.Pattern[str]) -> re.Pattern[str]:
    return path if isinstance(path, re.Pattern) else re.compile(re.escape(path))


def _status_body(code: int) -> bytes:
    reason = {409: "Conflict", 429: "TooManyRequests", 403: "Forbidden", 503: "ServiceUnavailable"}.get(
        code, "InternalError"
    )
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": f"injected {code}",
            "reason": reason,
            "code": code,
        }
    ).encode()
