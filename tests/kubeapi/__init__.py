"""A Kubernetes API server stand-in for integration tests (see server.py for what it does and does not do)."""

from tests.kubeapi.errors import ApiError
from tests.kubeapi.kinds import EVENTS, Kind, crd_kind
from tests.kubeapi.server import KubeApiServer, Request, default_crd_path

__all__ = ["EVENTS", "ApiError", "Kind", "KubeApiServer", "Request", "crd_kind", "default_crd_path"]
