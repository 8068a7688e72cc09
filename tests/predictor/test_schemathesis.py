"""schemathesis against a real predictor process: generated requests for every operation in /openapi.json.

Valid (positive) and invalid (negative) requests, with the model path as a path parameter both generated and
fixed to the served model (so bodies reach the model), at least 1,000 in total and not one answered with a 5xx.
Generation is derandomized so CI runs the same requests every time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.predictor.procs import Predictor, running_predictor
from tests.servers import MlflowServer

pytestmark = pytest.mark.slow

MODEL_NAME = "Fuzzed Model"
PATH = "fuzzed-model"
MIN_REQUESTS = 1000
EXAMPLES = 70
"""Examples per operation, generation mode and path choice; trivial operations stop after fewer."""


@pytest.fixture(scope="module")
def predictor(mlflow_srv: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Predictor]:
    import mlflow

    from tests.predictor.models import train_classifier

    mlflow.set_tracking_uri(mlflow_srv.url)
    mlflow.set_registry_uri(mlflow_srv.url)
    uri = train_classifier(MODEL_NAME)
    with running_predictor(uri, mlflow_srv.url, PATH, tmp_path_factory.mktemp("fuzz")) as p:
        yield p


def test_generated_requests_get_no_server_error(predictor: Predictor) -> None:
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{predictor.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == f"/{PATH}/api/v1/predict" for op in operations)
    calls: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    skipped: list[str] = []
    session = requests.Session()

    def fuzz(op: Any, mode: GenerationMode, path_parameters: dict[str, str] | None) -> None:
        @given(case=op.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            response = case.call(base_url=predictor.url, session=session, timeout=10)
            calls[op.label] += 1
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                errors.append(
                    f"{response.status_code} {case.method} {case.formatted_path} body={case.body!r:.300}: "
                    f"{response.text[:300]}"
                )

        try:
            run()
        except Unsatisfiable:
            # No invalid request exists for an operation without inputs (or with only the fixed path).
            if mode is not GenerationMode.NEGATIVE:
                raise
            skipped.append(f"{op.label} {path_parameters}")

    for op in operations:
        choices: list[dict[str, str] | None] = [None]
        if "{name}" in op.path:
            choices.append({"name": PATH})
        for path_parameters in choices:
            for mode in GenerationMode:
                fuzz(op, mode, path_parameters)

    total = sum(calls.values())
    print(f"\nschemathesis: {total} requests over {len(calls)} operations, statuses {dict(sorted(statuses.items()))}")
    print("no invalid request exists for: " + "; ".join(skipped))
    assert errors == [], f"{len(errors)} of {total} requests got a 5xx:\n" + "\n".join(errors[:20])
    assert total >= MIN_REQUESTS, f"only {total} requests generated: {dict(calls)}"
    assert statuses[200] > 0 and statuses[422] > 0, dict(statuses)
