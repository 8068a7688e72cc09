"""A fault-injecting HTTP proxy in front of the real kube-apiserver: the one stand-in the tests keep.

The code under test talks plain HTTP to `proxy.url`; every request is forwarded unchanged (its bearer token
included) to the real API server over TLS, and the real answer is returned; a watch (`?watch=true`) is streamed
through event by event. Rules can replace an answer before it reaches the server: a status (500, 429 with
`Retry-After`, 409, 403 ...), a delay, or a dropped connection; a rule may apply to watches only or to
everything but watches (a list). Watch faults: `cut_watches()` drops the open watch streams mid-stream,
`stall_watches()` keeps them open but passes nothing more on (no event, no bookmark), and `expire_watches()`
makes the next watches ask the real server for a resourceVersion it no longer holds, so the real server
answers 410 Gone. It records every request (method, path, status, whether a watch) so tests can count API
calls and writes (`requests()` tells watches apart). It implements no API-server behaviour of its own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

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
    watch: bool | None = None  # True: watch requests only; False: all but watches; None: both

    def matches(self, method: str, path: str, watch: bool) -> bool:
        return (
            (self.method in ("*", method))
            and bool(self.path.search(path))
            and (self.watch is None or self.watch == watch)
        )


class _Stream:
    """One watch being streamed to the client: `cut()` drops it, `stall()` stops passing events on."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.upstream: Any = None  # the socket to the API server
        self.stalled = threading.Event()
        self.cut = threading.Event()

    def client_gone(self) -> bool:
        readable, _, _ = select.select([self.client], [], [], 0.1)
        return bool(readable) and not self.client.recv(1, socket.MSG_PEEK)


class FaultProxy:
    """Start with `start()`; `inject()`, `drop()`, `slow()`, `clear_faults()`, `count()`, `reset_log()`."""

    def __init__(self, upstream: str, ca: Path) -> None:
        self.upstream = urlsplit(upstream)
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.rules: list[Rule] = []
        self.log: list[list[Any]] = []  # [method, path, status]: logged on arrival; status 0 until answered or dropped
        self._watch_flags: list[bool] = []  # per entry of `log`: was it a watch (see `requests`)
        self._stall_new = False  # stall the watches that open from now on too
        self.lock = threading.Lock()
        self.streams: list[_Stream] = []  # the watches open now
        self._expire = 0  # how many more watches are sent to the server with a resourceVersion it no longer holds
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
        watch: bool | None = None,
    ) -> None:
        rule = Rule(method, _pattern(path), status=status, headers=headers or {}, times=times, delay=delay, watch=watch)
        self._add(rule)

    def drop(
        self, method: str, path: str | re.Pattern[str], *, times: int | None = 1, watch: bool | None = None
    ) -> None:
        self._add(Rule(method, _pattern(path), drop=True, times=times, watch=watch))

    # ---- watch faults --------------------------------------------------------------------------
    def open_watches(self) -> int:
        with self.lock:
            return len(self.streams)

    def cut_watches(self) -> int:
        """Drop every open watch stream mid-stream (the connection closes, no final chunk); how many."""
        with self.lock:
            streams = list(self.streams)
        for stream in streams:
            stream.cut.set()
            for sock in (stream.client, stream.upstream):
                with contextlib.suppress(OSError, AttributeError):
                    sock.shutdown(socket.SHUT_RDWR)
        return len(streams)

    def stall_watches(self, *, new_ones: bool = False) -> int:
        """Keep every open watch open but pass nothing more on: no event, no bookmark (with `new_ones`, the watches
        that open from now on too, until `resume_watches()`); how many were open."""
        with self.lock:
            streams = list(self.streams)
            self._stall_new = self._stall_new or new_ones
        for stream in streams:
            stream.stalled.set()
        return len(streams)

    def resume_watches(self) -> None:
        """Watches that open from now on pass their events on again (stalled ones stay silent until they end)."""
        with self.lock:
            self._stall_new = False

    def expire_watches(self, times: int = 1) -> None:
        """The next `times` watches ask the real API server to start at resourceVersion 1, long gone from its
        history: it answers 410 Gone ("too old resource version"), as it does for a watch that was away too long."""
        with self.lock:
            self._expire += times

    def slow(self, method: str, path: str | re.Pattern[str], seconds: float, *, times: int | None = 1) -> None:
        self._add(Rule(method, _pattern(path), delay=seconds, times=times))

    def clear_faults(self) -> None:
        with self.lock:
            self.rules.clear()
            self._expire = 0
            self._stall_new = False

    def _add(self, rule: Rule) -> None:
        with self.lock:
            self.rules.append(rule)

    def _take(self, method: str, path: str, watch: bool) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.matches(method, path, watch):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self.rules.remove(rule)
                    return rule
        return None

    # ---- the request log -----------------------------------------------------------------------
    def count(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        writes_only: bool = False,
        watch: bool | None = None,
    ) -> int:
        """Requests logged so far; `watch` True counts watches only, False all but watches."""
        with self.lock:
            return sum(
                1
                for (m, p, _), w in zip(self.log, self._watch_flags, strict=True)
                if (method is None or m == method)
                and (path is None or path in p)
                and (not writes_only or m in WRITES)
                and (watch is None or w == watch)
            )

    def requests(self, *, watch: bool | None = None) -> list[list[Any]]:
        """The logged [method, path, status] entries; `watch` True: watches only, False: all but watches."""
        with self.lock:
            return [list(e) for e, w in zip(self.log, self._watch_flags, strict=True) if watch is None or w == watch]

    def reset_log(self) -> None:
        with self.lock:
            self.log.clear()
            self._watch_flags.clear()

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
                parts = urlsplit(self.path)
                path = parts.path
                watch = _is_watch(parts.query)
                entry = proxy._record(self.command, path, watch)
                rule = proxy._take(self.command, path, watch)
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
                if watch and self.command == "GET":
                    proxy._stream_watch(self, parts, entry)
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

    def _record(self, method: str, path: str, watch: bool = False) -> list[Any]:
        entry: list[Any] = [method, path, 0]
        with self.lock:
            self.log.append(entry)
            self._watch_flags.append(watch)
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

    def _stream_watch(self, handler: BaseHTTPRequestHandler, parts: Any, entry: list[Any]) -> None:
        """Forward a watch and pass its answer on line by line (one event per line), chunked, until either side
        ends it or a fault does."""
        query = parse_qsl(parts.query, keep_blank_values=True)
        with self.lock:
            expire = self._expire > 0
            self._expire -= 1 if expire else 0
        if expire:
            query = [(k, "1" if k == "resourceVersion" else v) for k, v in query]
        target = parts.path + "?" + urlencode(query)
        conn = http.client.HTTPSConnection(
            self.upstream.hostname or "127.0.0.1", self.upstream.port, context=self.ctx, timeout=3600
        )
        stream = _Stream(handler.connection)
        try:
            sent = {k: v for k, v in dict(handler.headers).items() if k.lower() not in _HOP}
            conn.request("GET", target, headers=sent)
            resp = conn.getresponse()
            entry[2] = resp.status
            handler.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP and k.lower() != "content-length":
                    handler.send_header(k, v)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            stream.upstream = conn.sock
            with self.lock:
                self.streams.append(stream)
                if self._stall_new:
                    stream.stalled.set()
            while not stream.cut.is_set():
                if stream.stalled.is_set():  # silent: read nothing more, until the client gives up
                    if stream.client_gone():
                        break
                    continue
                line = resp.readline()
                if not line:  # the server ended the watch: end the chunked answer properly
                    handler.wfile.write(b"0\r\n\r\n")
                    break
                if stream.stalled.is_set():
                    continue
                handler.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                handler.wfile.flush()
        except OSError:
            pass  # the client went away, or the stream was cut
        finally:
            with self.lock:
                if stream in self.streams:
                    self.streams.remove(stream)
            handler.close_connection = True
            conn.close()


def _is_watch(query: str) -> bool:
    return any(k == "watch" and v in ("true", "1") for k, v in parse_qsl(query))


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
