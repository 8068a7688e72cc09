"""A Kubernetes API server stand-in for integration tests (see server.py for what it does and does not do)."""

from tests.kubeapi.errors import ApiError
from tests.kubeapi.kinds import EVENTS, Kind, crd_kind
from tests.kubeapi.kserve import isvc_status, kserve_webhook
from tests.kubeapi.server import KubeApiServer, Request, default_crd_path
from tests.kubeapi.store import AdmissionDenied

__all__ = [
    "EVENTS",
    "AdmissionDenied",
    "ApiError",
    "Kind",
    "KubeApiServer",
    "Request",
    "crd_kind",
    "default_crd_path",
    "isvc_status",
    "kserve_webhook",
]
