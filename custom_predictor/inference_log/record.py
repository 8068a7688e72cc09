"""The inference log's record: one row per call, and its schema (names and Arrow types), stated once.

`Record` is what the request path builds and `InferenceLog.put` takes; `COLUMNS` is the stable schema every
sink writes (the stdout sink's JSON keys, the CloudEvents sink's extensions, the inference table's Parquet
columns) and `docs/inference-log.md` documents. `to_json` is the one JSON form of a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson


@dataclass
class Record:
    """One call that reached a model route, success or error. THE schema: names and types are stable."""

    request_id: str
    time: datetime  # UTC, when the request arrived
    model_name: str
    model_version: str | None
    namespace: str  # "" locally
    inferenceservice: str  # "" locally
    protocol: str  # "typed" | "kserve_v1" | "v2" | "mlflow"
    route: str  # the route template, e.g. "/v2/models/{name}/infer"
    status: int
    latency_ms: float
    rows_in: int | None
    rows_out: int | None
    subject: str | None  # Caller.subject when authenticated; never a credential
    entity_id: str | None  # the looked-up id of an entity lookup (which record was read)
    sampling_fraction: float  # the share of calls whose bodies are kept that applied to this one
    request: str | None  # JSON text, only when the policy and sampling keep bodies
    response: str | None
    truncated: bool  # a body was cut at the size cap
    error: str | None  # the error code of a refused or failed call (invalid_input, unauthenticated, ...)


# (name, Arrow type, nullable, what it means): the inference table's columns, in order. A test keeps these names
# equal to Record's fields and to the table in docs/inference-log.md.
COLUMNS: tuple[tuple[str, str, bool, str], ...] = (
    ("request_id", "string", False, "X-Request-Id or Ce-Id of the call, else generated; also in the response"),
    ("time", "timestamp[us, tz=UTC]", False, "when the request arrived"),
    ("model_name", "string", False, "registered model name"),
    ("model_version", "string", True, "registered model version that answered"),
    ("namespace", "string", False, "namespace of the InferenceService (empty locally)"),
    ("inferenceservice", "string", False, "name of the InferenceService (empty locally)"),
    ("protocol", "string", False, "typed, kserve_v1, v2 or mlflow"),
    ("route", "string", False, "route template, e.g. /v2/models/{name}/infer"),
    ("status", "int32", False, "HTTP status code of the answer"),
    ("latency_ms", "double", False, "server-side latency, milliseconds"),
    ("rows_in", "int64", True, "rows in the request"),
    ("rows_out", "int64", True, "rows in the response"),
    ("subject", "string", True, "the authenticated caller (never a credential)"),
    ("entity_id", "string", True, "the id an entity lookup read"),
    ("sampling_fraction", "double", False, "share of calls whose bodies are kept, as applied to this call"),
    ("request", "string", True, "request as the model saw it, JSON; sensitive inputs as keyed hashes"),
    ("response", "string", True, "response body, JSON"),
    ("truncated", "bool", False, "a body was cut at the size cap (it is then not valid JSON)"),
    ("error", "string", True, "error code of a refused or failed call"),
)
NAMES = tuple(c[0] for c in COLUMNS)


def to_json(record: Record) -> bytes:
    """The record as one JSON object (UTF-8, no newline): the schema's names, `time` as RFC 3339 in UTC."""
    return orjson.dumps(record, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)
