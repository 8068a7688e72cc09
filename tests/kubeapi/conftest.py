"""Fixtures of the Kubernetes API stand-in for its own tests (until tests/conftest.py registers the plugin)."""

from tests.kubeapi.plugin import kube_api, kube_client, pytest_configure

__all__ = ["kube_api", "kube_client", "pytest_configure"]
