"""The inference log: one record per call that reaches a model route, written off the request path.

The request path builds a `Record` per call and calls `InferenceLog.put` (never blocks, never raises). Privacy
by policy (`policy.py`: off, metadata, full; body sampling; sensitive inputs as keyed hashes; a body cap); one
bounded queue and writer thread per sink (`channel.py`: batching, retries with backoff, flush on stop); sinks in
`sinks/` (stdout, CloudEvents in KServe's logger format, a Parquet inference table). docs/inference-log.md
describes the schema, the policies, the sinks and what is lost when.
"""

from custom_predictor.inference_log.log import InferenceLog
from custom_predictor.inference_log.record import COLUMNS, Record

__all__ = ["COLUMNS", "InferenceLog", "Record"]
