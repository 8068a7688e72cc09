"""The adapter's Prometheus metrics (prometheus-client), served at `/metrics` by `service-builder run`.

One registry per process; the objects below are the only names the rest of the adapter uses. Labels are small,
fixed sets (results, statuses, kinds): never a model name, so cardinality stays bounded however large the
registry is.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

PASS_SECONDS = Histogram(
    "service_builder_pass_duration_seconds",
    "Duration of one reconcile pass.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
PASSES = Counter(
    "service_builder_passes", "Reconcile passes by result (ok, skipped, error).", ["result"], registry=REGISTRY
)
MODELS = Gauge(
    "service_builder_models", "Models by deployment status after the last pass.", ["status"], registry=REGISTRY
)
APPLIES = Counter(
    "service_builder_applies", "InferenceService applies by result (ok, error).", ["result"], registry=REGISTRY
)
DELETES = Counter(
    "service_builder_deletes", "InferenceService deletes by result (ok, error).", ["result"], registry=REGISTRY
)
TAG_WRITES = Counter(
    "service_builder_tag_writes", "MLflow tag writes by result (ok, error).", ["result"], registry=REGISTRY
)
CALLS = Counter(
    "service_builder_api_calls",
    "Calls to MLflow and Kubernetes by system and kind.",
    ["system", "kind"],
    registry=REGISTRY,
)
CALL_ERRORS = Counter(
    "service_builder_api_errors",
    "Failed calls to MLflow and Kubernetes by system and kind.",
    ["system", "kind"],
    registry=REGISTRY,
)
WEBHOOKS = Counter(
    "service_builder_webhook_deliveries",
    "MLflow webhook deliveries by result (queued, ignored, not-leader, rejected, malformed; busy: a connection"
    " refused because MAX_CONNECTIONS were being served).",
    ["result"],
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "service_builder_last_successful_pass_timestamp_seconds",
    "Unix time of the last pass that reached MLflow and Kubernetes (result ok or error).",
    registry=REGISTRY,
)
LEADER = Gauge(
    "service_builder_leader",
    "1 while this replica may reconcile (it holds the leader Lease, or runs without leader election), else 0.",
    registry=REGISTRY,
)
WATCH_EVENTS = Counter(
    "service_builder_watch_events",
    "Events of the watch on owned InferenceServices by type (added, modified, deleted, bookmark).",
    ["type"],
    registry=REGISTRY,
)
WATCH_RESTARTS = Counter(
    "service_builder_watch_restarts",
    "Watches of owned InferenceServices that ended, by reason: ended (the API server's timeout), expired"
    " (410 Gone: listed again), stalled (no event or bookmark for WATCH_STALL_SECONDS), error (backed off).",
    ["reason"],
    registry=REGISTRY,
)
