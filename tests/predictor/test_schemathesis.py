"""schemathesis against a real predictor process: generated requests for every operation in /openapi.json.

Valid (positive) and invalid (negative) requests, with the model path as a path parameter both generated (404)
and fixed to the served model (so bodies reach the model): at least 1,000 in all, and not one answered with a 5xx.
Generation is derandomized so CI runs the same requests every time. The KServe V1 and V2 request schemas are
exact per contract: positive-mode requests to them, for a model with inputs of every type and the model path
fixed, are answered 200 (at least 90%).
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.predictor.procs import Predictor, running_predictor
from tests.servers import MlflowServer

MODEL_NAME = "Fuzzed Model"
PATH = "fuzzed-model"
MIN_REQUESTS = 1000
EXAMPLES = 150
"""Examples per operation with a body and generation mode, with the model path fixed to the served model."""
RANDOM_PATH = 20
"""Examples per operation with a generated model path (all answered 404) and per operation without inputs."""
KSERVE_EXAMPLES = 300
"""Positive-mode examples per KServe predict operation with the model path fixed."""
MIN_SHARE_200 = 0.9
MIXED_PATH = "mixed"
UNTYPED_PATH = "untyped"


@pytest.fixture(scope="module", params=["typed", "untyped"])
def predictor(
    request: pytest.FixtureRequest, mlflow_srv: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Predictor]:
    """The registered classifier (typed from its signature), or a custom pyfunc model logged without signature
    (it declares nothing: served untyped)."""
    import mlflow

    from tests.predictor.flavors import save_untyped_pyfunc
    from tests.predictor.models import train_classifier

    if request.param == "untyped":
        folder = save_untyped_pyfunc(tmp_path_factory.mktemp("fuzz-untyped") / "model")
        with running_predictor(str(folder), None, UNTYPED_PATH, folder.parent, SERVICE_PATH=UNTYPED_PATH) as p:
            yield p
        return
    mlflow.set_tracking_uri(mlflow_srv.url)
    mlflow.set_registry_uri(mlflow_srv.url)
    uri = train_classifier(MODEL_NAME)
    with running_predictor(uri, mlflow_srv.url, PATH, tmp_path_factory.mktemp("fuzz")) as p:
        _load_scikit_learn(p)
        yield p


def _load_scikit_learn(p: Predictor) -> None:
    """Rows the numpy kernel hands to scikit-learn (an overflow inside the scaler) make the predictor load it,
    seconds on a busy machine: once here, with time to spare, so that no fuzzed request waits for it."""
    import json
    import urllib.error
    import urllib.request

    row = dict.fromkeys(("radius", "texture", "perimeter", "area", "smoothness"), 1.7976931348623155e308)
    body = json.dumps({"records": [row]}).encode()
    request = urllib.request.Request(f"{p.api}/v1/predict", body, {"content-type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=300).close()
    except urllib.error.HTTPError as e:
        assert e.code == 422, e.read()  # scikit-learn refuses the infinity: the model rejected the input


@pytest.fixture(scope="module")
def mixed(local_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Predictor]:
    """A predictor for `models.save_mixed_pyfunc` (inputs of every type, ranges, allowed values, optional ones)."""
    from tests.predictor.models import save_mixed_pyfunc

    folder = save_mixed_pyfunc(tmp_path_factory.mktemp("mixed") / "model")
    with running_predictor(str(folder), None, MIXED_PATH, folder.parent, SERVICE_PATH=MIXED_PATH) as p:
        yield p


def repeatable(examples: int) -> Any:
    """hypothesis settings for `examples` cases generated the same way on every run (CI included)."""
    from hypothesis import HealthCheck, Phase, settings

    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def test_generated_requests_get_no_server_error(predictor: Predictor) -> None:
    import requests
    import schemathesis
    from hypothesis import given
    from schemathesis import GenerationMode
    from schemathesis.core.result import Ok

    schema = schemathesis.openapi.from_url(f"{predictor.url}/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), [r for r in results if not isinstance(r, Ok)]
    assert any(op.path == f"/{predictor.path}/api/v1/predict" for op in operations)
    calls: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    session = requests.Session()

    def fuzz(op: Any, mode: GenerationMode, path_parameters: dict[str, str] | None, examples: int) -> None:
        @given(case=op.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        @repeatable(examples)
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
            served = {"name": predictor.path, "version": "1"}
            fixed = {k: v for k, v in served.items() if k in {p.name for p in op.path_parameters}}
            variants = [(None, RANDOM_PATH), (fixed, EXAMPLES if has_input else 1)]
        for path_parameters, examples in variants:
            fuzz(op, GenerationMode.POSITIVE, path_parameters, examples)
            if has_input:  # without a body or query there is no invalid request to make
                fuzz(op, GenerationMode.NEGATIVE, path_parameters, examples)

    total = sum(calls.values())
    print(f"\nschemathesis: {total} requests over {len(calls)} operations, statuses {dict(sorted(statuses.items()))}")
    assert errors == [], f"{len(errors)} of {total} requests got a 5xx:\n" + "\n".join(errors[:20])
    assert total >= MIN_REQUESTS, f"only {total} requests generated: {dict(calls)}"
    assert statuses[200] > 0 and statuses[422] > 0, dict(statuses)


ROWS_RULE = re.compile(r"inputs\[\d+\]\.(shape|data)")
"""Where the predictor refuses a V2 body that breaks only the rows rules: a tensor's shape or data."""


def with_consistent_rows(body: Any) -> Any:
    """A V2 body with the two rules its schema states in words only applied: every tensor's shape[0] is its rows
    (values in `data`, or values / columns for a flat 2-D tensor), and all tensors have the same rows (the fewest,
    extra values dropped). Everything else is left as generated."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        return body
    body = copy.deepcopy(body)
    tensors = [t for t in body["inputs"] if isinstance(t, dict) and isinstance(t.get("data"), list)]
    if not tensors or not all(isinstance(t.get("shape"), list) and t["shape"] for t in tensors):
        return body

    def width(t: dict[str, Any]) -> int:
        nested = t["data"] and isinstance(t["data"][0], list)
        return 1 if nested or len(t["shape"]) == 1 else max(int(t["shape"][1]), 1)

    rows = min(len(t["data"]) // width(t) for t in tensors)
    for t in tensors:
        t["data"] = t["data"][: rows * width(t)]
        t["shape"][0] = rows
    return body


def _first_loc(response: Any) -> str:
    try:
        return str(response.json()["details"][0]["loc"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


@pytest.mark.parametrize("operation_id", ["v1_predict", "v2_infer"])
def test_valid_kserve_requests_are_answered_200(mixed: Predictor, operation_id: str) -> None:
    """What the V1/V2 request schema calls valid, the route accepts: the documented schemas are exact.

    V1 bodies are sent as generated. V2 bodies are sent as generated (refused, if at all, only for the rows rules
    JSON Schema cannot state), then with `with_consistent_rows` applied. At least 90% must be answered 200. JSON
    bodies only: the binary extension's body is raw bytes JSON Schema cannot describe (real clients send it in
    test_clients.py)."""
    import requests
    import schemathesis
    from hypothesis import assume, given
    from schemathesis import GenerationMode

    op = schemathesis.openapi.from_url(f"{mixed.url}/openapi.json").find_operation_by_id(operation_id)
    as_generated: Counter[int] = Counter()
    statuses: Counter[int] = Counter()
    refused: list[str] = []
    beyond_rows: list[str] = []
    session = requests.Session()

    @given(case=op.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters={"name": MIXED_PATH}))
    @repeatable(KSERVE_EXAMPLES)
    def run(case: Any) -> None:
        assume(case.media_type == "application/json")
        response = case.call(base_url=mixed.url, session=session, timeout=10)
        as_generated[response.status_code] += 1
        if operation_id == "v2_infer":
            if response.status_code != 200 and not ROWS_RULE.fullmatch(_first_loc(response)):
                beyond_rows.append(f"{response.status_code} body={case.body!r:.400}: {response.text[:300]}")
            case.body = with_consistent_rows(case.body)
            response = case.call(base_url=mixed.url, session=session, timeout=10)
        statuses[response.status_code] += 1
        if response.status_code != 200:
            refused.append(f"{response.status_code} body={case.body!r:.400}: {response.text[:300]}")

    run()
    total = sum(statuses.values())
    share = statuses[200] / total
    print(
        f"\n{operation_id}: {total} positive-mode requests, {share:.1%} answered 200 {dict(sorted(statuses.items()))}"
        f"; as generated {as_generated[200] / total:.1%} {dict(sorted(as_generated.items()))}"
    )
    assert not any(s >= 500 for s in as_generated + statuses), "\n".join(refused + beyond_rows)[:3000]
    assert total >= KSERVE_EXAMPLES / 2, dict(statuses)
    assert beyond_rows == [], "refused for more than the rows rules:\n" + "\n".join(beyond_rows[:15])
    assert share >= MIN_SHARE_200, f"{share:.1%} answered 200; refused:\n" + "\n".join(refused[:15])
