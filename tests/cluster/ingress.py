"""The one part of the serving path still played in the cluster tier: Knative's ingress.

Kourier, Istio and Contour run Envoy, which no package registry reachable here carries. This small ingress does
only what a KIngress of our ingress class asks (`knative.INGRESS_CLASS`): it routes a request by its Host header
(and a `headers` match, for tag routes) to one of the path's splits, chosen by their percentages, adds the split's
`appendHeaders` (the revision and namespace Knative's activator reads) and forwards it to a ready endpoint of the
split's Service, read from the Service's EndpointSlices (there is no kube-proxy). It reports each KIngress it
programmed as ready. Everything else of the path is real: the Services' endpoints are the activator's or the pods'
as Knative's SKS sets them, the activator buffers and wakes revisions, queue-proxy fronts our predictor.

It listens on 127.0.0.1 only; tests send their requests there with the route's Host header, and a browser uses it
as its HTTP proxy (absolute URIs), so that it loads the route's real URL.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import random
import threading
import time
import urllib.parse
from typing import Any

from kubernetes import client

from tests.cluster.knative import INGRESS_CLASS
from tests.servers import free_port

GROUP, VERSION = "networking.internal.knative.dev", "v1alpha1"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class RouteIngress:
    def __init__(self, api: client.ApiClient) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.discovery = client.DiscoveryV1Api(api)
        self.routes: dict[str, list[dict[str, Any]]] = {}  # host -> the rules' paths that name it
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name="test-ingress").start()
        threading.Thread(target=self._reconcile_loop, daemon=True, name="test-ingress-reconcile").start()

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    # ---- KIngress -> routes ----------------------------------------------------------------------
    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self._reconcile()
            self._stop.wait(0.3)

    def _reconcile(self) -> None:
        items = self.objects.list_cluster_custom_object(GROUP, VERSION, "ingresses")["items"]
        routes: dict[str, list[dict[str, Any]]] = {}
        for ing in items:
            meta = ing["metadata"]
            if (meta.get("annotations") or {}).get("networking.knative.dev/ingress.class") != INGRESS_CLASS:
                continue
            for rule in ing["spec"].get("rules") or []:
                for host in rule.get("hosts") or []:
                    routes.setdefault(host, []).extend((rule.get("http") or {}).get("paths") or [])
            status = ing.get("status") or {}
            if status.get("observedGeneration") != meta["generation"] or not _ready(status):
                self._report_ready(ing)
        with self._lock:
            self.routes = routes

    def _report_ready(self, ing: dict[str, Any]) -> None:
        meta = ing["metadata"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        balancer = {"ingress": [{"domainInternal": f"test-ingress.{meta['namespace']}.svc.cluster.local"}]}
        status = {
            "observedGeneration": meta["generation"],
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("Ready", "LoadBalancerReady", "NetworkConfigured")
            ],
            "publicLoadBalancer": balancer,
            "privateLoadBalancer": balancer,
        }
        self.objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], "ingresses", meta["name"], {"status": status}
        )

    # ---- requests ----------------------------------------------------------------------------
    def _pick(self, host: str, headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]] | None:
        with self._lock:
            paths = list(self.routes.get(host.split(":")[0], []))
        # A path with a header match (tag routes) wins over one without when its headers are there.
        matching = [p for p in paths if _headers_match(p.get("headers") or {}, headers)]
        matching.sort(key=lambda p: not p.get("headers"))
        if not matching:
            return None
        path = matching[0]
        splits = path.get("splits") or []
        split = random.choices(splits, weights=[s.get("percent", 0) for s in splits])[0]
        extra = {**(path.get("appendHeaders") or {}), **(split.get("appendHeaders") or {})}
        return split, extra

    def _endpoint(self, namespace: str, service: str, port: int | str) -> tuple[str, int] | None:
        slices = self.discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}"
        ).items
        for s in slices:
            ports = [p.port for p in s.ports or [] if p.port]
            if not ports:
                continue
            target = ports[0]
            for p in s.ports or []:
                if p.name in ("http", "http1", str(port)) or p.port == port:
                    target = p.port
                    break
            ready = [a for e in s.endpoints or [] if (e.conditions is None or e.conditions.ready) for a in e.addresses]
            if ready:
                return random.choice(ready), int(target)
        return None

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        ingress = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                path = self.path
                if path.startswith("http://"):  # a browser told to use this as its proxy sends absolute URIs
                    parts = urllib.parse.urlsplit(path)
                    headers["Host"] = parts.netloc
                    path = parts.path + (f"?{parts.query}" if parts.query else "")
                picked = ingress._pick(headers.get("Host", ""), headers)
                target = None
                if picked:
                    split, extra = picked
                    headers.update(extra)
                    target = ingress._endpoint(split["serviceNamespace"], split["serviceName"], split["servicePort"])
                if target is None:
                    self._answer(404 if not picked else 503, b"no route or no ready endpoint\n", {})
                    return
                conn = http.client.HTTPConnection(*target, timeout=300)
                try:
                    conn.request(self.command, path, body=body, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                    out = {k: v for k, v in r.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}}
                    self._answer(r.status, data, out)
                except OSError as e:
                    self._answer(502, f"upstream {target}: {e}\n".encode(), {})
                finally:
                    conn.close()

            def _answer(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        return Handler


def _ready(status: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _headers_match(match: dict[str, Any], headers: dict[str, str]) -> bool:
    lower = {k.lower(): v for k, v in headers.items()}
    return all(lower.get(k.lower()) == (v or {}).get("exact") for k, v in match.items())
