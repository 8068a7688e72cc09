"""A TCP forwarder from the node's bridge address to kube-apiserver on 127.0.0.1, so that pods (Knative's
components, with their ServiceAccount tokens) reach the API server the tests run on loopback. Threads, one pair per
connection; `close()` ends it."""

from __future__ import annotations

import contextlib
import socket
import threading


class Forwarder:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(listen, reuse_port=False)
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="apiserver-forward").start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.server.close()
