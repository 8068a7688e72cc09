"""One router per protocol over the one prediction service: `typed` (the contract's API), `kserve_v1`,
`kserve_v2` (Open Inference Protocol), `mlflow` (MLflow's scoring protocol), `health` (health and metrics) and
`docs` (Swagger UI and the OpenAPI request bodies of raw-body routes). `app` includes them all."""
