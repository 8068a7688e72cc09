"""schemathesis against a real predictor process: generated requests for every operation in /openapi.json.

Valid (positive) and invalid (negative) requests, with the model path as a path parameter both generated (404)
and fixed to the served model (so bodies reach the model): at least 1,000 in all, and not one answered with a 5xx.
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
EXAMPLES = 150
"""Examples per operation with a body and generation mode, with the model path fixed to the served model."""
RANDOM_PATH = 20
"""Examples per operation with a generated model path (all answered 404) and per operation without inputs."""


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
    from schemathesis import GenerationMode
    from schemathesis.core.result import Ok

    schema = schemathesis.openapi.from_url(f"{predictor.url}/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), [r for r in results if not isinstance(r, Ok)]
    assert any(op.path == f"/{PATH}/api/v1/predict" for op in operations)
    calls: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    session = requests.Session()

    def fuzz(op: Any, mode: GenerationMode, path_parameters: dict[str, str] | None, examples: int) -> None:
        @given(case=op.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        @settings(
            max_examples=examples,
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

        run()

    for op in operations:
        has_input = len(op.body) > 0 or len(op.query) > 0 or len(op.headers) > 0
        variants: list[tuple[dict[str, str] | None, int]] = [(None, EXAMPLES if has_input else RANDOM_PATH)]
        if len(op.path_parameters) > 0:
            variants = [(None, RANDOM_PATH), ({"name": PATH}, EXAMPLES if has_input else 1)]
        for path_parameters, examples in variants:
            fuzz(op, GenerationMode.POSITIVE, path_parameters, examples)
            if has_input:  # without a body or query there is no invalid request to make
                fuzz(op, GenerationMode.NEGATIVE, path_parameters, examples)

    total = sum(calls.values())
    print(f"\nschemathesis: {total} requests over {len(calls)} operations, statuses {dict(sorted(statuses.items()))}")
    assert errors == [], f"{len(errors)} of {total} requests got a 5xx:\n" + "\n".join(errors[:20])
    assert total >= MIN_REQUESTS, f"only {total} requests generated: {dict(calls)}"
    assert statuses[200] > 0 and statuses[422] > 0, dict(statuses)
