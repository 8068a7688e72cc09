"""The Open Inference Protocol (KServe V2): server and model metadata, readiness, and `infer`, JSON or binary."""

from custom_predictor.protocols.v2.router import router

__all__ = ["router"]
