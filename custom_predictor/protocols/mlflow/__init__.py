"""MLflow's scoring protocol, as `mlflow models serve` speaks it: `/invocations`, `/ping`, `/health`, `/version`."""

from custom_predictor.protocols.mlflow.router import router

__all__ = ["router"]
