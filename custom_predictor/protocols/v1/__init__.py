"""KServe V1: liveness, the model list and readiness, and `:predict` with `instances`."""

from custom_predictor.protocols.v1.router import router

__all__ = ["router"]
