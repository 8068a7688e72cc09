"""pytest fixtures for the Kubernetes API stand-in: `kube_api` (a fresh server per test) and `kube_client`.

Register with `pytest_plugins = ["tests.kubeapi.plugin"]`. Options per test through the marker, e.g.
`@pytest.mark.kube_api(token="s3cret", tls=True, namespaces=["default"], admission=[kserve_webhook])`.
At teardown the fixture fails the test if the stand-in itself crashed on a request (a bug in the
stand-in, not in the code under test).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kubeapi.server import KubeApiServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kube_api(token=None, namespaces=None, tls=False, admission=()): options of the kube_api stand-in fixture",
    )


@pytest.fixture
def kube_api(request: pytest.FixtureRequest) -> Iterator[KubeApiServer]:
    """A Kubernetes API stand-in on 127.0.0.1, fresh for this test and stopped after it."""
    marker = request.node.get_closest_marker("kube_api")
    options = dict(marker.kwargs) if marker else {}
    with KubeApiServer(**options) as server:
        yield server
    assert not server.errors, "the kube_api stand-in failed on a request:\n" + "\n".join(server.errors)


@pytest.fixture
def kube_client(kube_api: KubeApiServer) -> Iterator[object]:
    """A real `kubernetes.client.ApiClient` configured for `kube_api` (bearer token included)."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = kube_api.url
    if kube_api.ca_file:
        configuration.ssl_ca_cert = kube_api.ca_file
    if kube_api.token:
        configuration.api_key = {"authorization": kube_api.token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    api_client = client.ApiClient(configuration)
    try:
        yield api_client
    finally:
        api_client.close()
