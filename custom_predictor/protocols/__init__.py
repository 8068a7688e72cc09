"""The protocols the predictor speaks, one package each: `typed` (the contract's own API under `/<model>/api/v1`),
`v1` (KServe V1), `v2` (the Open Inference Protocol) and `mlflow` (MLflow's scoring protocol). Each has a `router`
(thin routes: decode, predict, encode), a `codec` (its wire format <-> `Columns` and the model's output) and
`schemas` (its documented bodies). They share the data plane, the caller dependency and the error renderers."""
