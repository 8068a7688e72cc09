"""A CloudEvents receiver for tests, built on the CloudEvents SDK (`cloudevents.http.from_http`), on 127.0.0.1.

It parses every POST as a consumer of KServe's logger would and keeps the events; `answers` scripts the next
HTTP statuses (e.g. 503 twice: a broker that is down).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cloudevents.http import CloudEvent, from_http


@dataclass
class Receiver:
    url: str
    events: list[CloudEvent] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    authorization: list[str] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextlib.contextmanager
def cloudevents_receiver() -> Iterator[Receiver]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a broker does

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.lock:
                status = receiver.answers.pop(0) if receiver.answers else 202
                if status < 300:
                    headers: dict[str, Any] = {k.lower(): v for k, v in self.headers.items()}
                    receiver.events.append(from_http(headers, body, data_unmarshaller=lambda b: b))
                    receiver.bodies.append(body)
                    receiver.authorization.append(self.headers.get("Authorization", ""))
                else:
                    receiver.refused += 1
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def main() -> None:
    """`python -m tests.inference_log.receiver`: serve in a process of its own (benchmarks), print the URL, run
    until stdin closes."""
    import sys

    with cloudevents_receiver() as receiver:
        print(receiver.url, flush=True)
        sys.stdin.read()
        print(len(receiver.events), flush=True)


if __name__ == "__main__":
    main()
