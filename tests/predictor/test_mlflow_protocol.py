"""MLflow's scoring protocol against MLflow's own: the same bodies sent to `mlflow models serve`'s app
(`mlflow.pyfunc.scoring_server.init`, in-process) and to the predictor get the same status and the same JSON
(predictions, or MLflow's error codes); MLflow's `ScoringServerClient` works against a real predictor process;
and on a numpy-kernel model no protocol's prediction imports pandas or scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.predictor import models
from tests.predictor.conftest import REPO, ROW, in_process, run_predictor

FEATURES = models.FEATURES
ROWS = [ROW, {k: v * 1.1 for k, v in ROW.items()}]
SPLIT = {"columns": FEATURES, "data": [[r[f] for f in FEATURES] for r in ROWS]}
CSV = ",".join(FEATURES) + "\n" + "\n".join(",".join(repr(r[f]) for f in FEATURES) for r in ROWS) + "\n"
PY = [{"a": 1.5, "b": 2, "name": "x"}, {"a": -1.0, "b": 0, "name": "y"}]
MIXED = [{"dose": 2.5, "visits": 3, "arm": "low", "smoker": True, "note": "x"}]

SAME = {
    "classifier": [
        {"dataframe_split": SPLIT},
        {"dataframe_split": {**SPLIT, "index": [7, 8]}},
        {"dataframe_records": ROWS},
        {"instances": ROWS},
        {"inputs": ROWS},
        {"inputs": {f: [r[f] for r in ROWS] for f in FEATURES}},
        {"dataframe_records": [{**ROW, "patient": 12}]},  # a column the model does not take: ignored
        {"dataframe_records": ROWS, "params": {"unused": 1}},  # params the model does not take: ignored
        {"dataframe_records": [{k: v for k, v in ROW.items() if k != "area"}]},  # 400 INVALID_PARAMETER_VALUE
        {"dataframe_split": {**SPLIT, "extra": 1}},  # 400
        {"nothing": ROWS},  # 400 BAD_REQUEST
        {"dataframe_records": ROWS, "instances": ROWS},  # 400 BAD_REQUEST
        [ROW],  # 400 BAD_REQUEST
    ],
    "pyfunc": [
        {"dataframe_records": PY},
        {"dataframe_split": {"columns": ["name", "b", "a"], "data": [[r["name"], r["b"], r["a"]] for r in PY]}},
        {"inputs": {"a": [1.5], "b": [2], "name": ["x"]}},
        {"dataframe_records": [{"a": -5e6, "b": 1, "name": "secret-name"}]},  # the model raises: 400 BAD_REQUEST
    ],
    "mixed": [{"dataframe_records": MIXED}, {"instances": MIXED}],
    "params": [
        {"dataframe_records": [{"x": 2.0}], "params": {"scale": 3.0}},
        {"dataframe_records": [{"x": 2.0}, {"x": -1.0}]},
    ],
    "untyped": [
        {"dataframe_split": SPLIT},
        {"dataframe_records": ROWS},
        {"inputs": SPLIT["data"]},
        {"instances": SPLIT["data"]},
    ],
}
"""Bodies both servers answer alike (status, and the body when 200, else its error_code)."""


@pytest.fixture(scope="module")
def folders(local_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mlflow-protocol")
    return {
        "classifier": local_models["classifier"],
        "pyfunc": local_models["pyfunc"],
        "mixed": models.save_mixed_pyfunc(root / "mixed"),
        "params": models.save_params_pyfunc(root / "params"),
        "untyped": models.save_untyped(root / "untyped"),
    }


@pytest.fixture(scope="module")
def pair(folders: dict[str, Path]) -> Iterator[Any]:
    """kind -> (MLflow's scoring app, the predictor), both in-process on the same model folder."""
    import contextlib

    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server
    from starlette.testclient import TestClient

    with contextlib.ExitStack() as stack:
        clients = {}
        for kind, folder in folders.items():
            theirs = TestClient(scoring_server.init(mlflow.pyfunc.load_model(str(folder))))
            ours = stack.enter_context(in_process(model_uri=str(folder), service_path=kind))
            clients[kind] = (theirs, ours)
        yield clients


def _post(client: Any, body: Any, ctype: str = "application/json") -> Any:
    content = body if isinstance(body, str) else json.dumps(body)
    return client.post("/invocations", content=content, headers={"content-type": ctype})


@pytest.mark.parametrize(
    ("kind", "index"), [(kind, i) for kind, bodies in SAME.items() for i in range(len(bodies))], ids=str
)
def test_same_answer_as_mlflow_models_serve(pair: dict[str, Any], kind: str, index: int) -> None:
    theirs, ours = pair[kind]
    body = SAME[kind][index]
    a, b = _post(theirs, body), _post(ours, body)
    assert (b.status_code, b.headers["content-type"]) == (a.status_code, a.headers["content-type"]), b.text
    if a.status_code == 200:
        assert b.json() == a.json()
    else:
        assert b.json()["error_code"] == a.json()["error_code"], (a.text, b.text)
        assert "secret" not in b.text and "stack_trace" not in b.json()


@pytest.mark.parametrize("kind", ["classifier", "untyped"])
def test_csv_as_mlflow_reads_it(pair: dict[str, Any], kind: str) -> None:
    theirs, ours = pair[kind]
    a, b = _post(theirs, CSV, "text/csv"), _post(ours, CSV, "text/csv; charset=utf-8")
    assert a.status_code == b.status_code == 200 and a.json() == b.json(), b.text


@pytest.mark.parametrize(
    ("ctype", "status"),
    [("text/plain", 415), ("application/json; charset=latin-1", 415), ("application/json; format=pandas", 415)],
)
def test_other_media_types_are_415_as_in_mlflow(pair: dict[str, Any], ctype: str, status: int) -> None:
    theirs, ours = pair["classifier"]
    a, b = _post(theirs, {"dataframe_split": SPLIT}, ctype), _post(ours, {"dataframe_split": SPLIT}, ctype)
    assert a.status_code == b.status_code == status
    assert b.headers["content-type"].startswith("text/plain") and a.text.split(":")[0] == b.text.split(":")[0]


def test_ping_health_version_as_mlflow(pair: dict[str, Any]) -> None:
    theirs, ours = pair["classifier"]
    for path in ("/ping", "/health", "/version"):
        a, b = theirs.get(path), ours.get(path)
        assert (b.status_code, b.text, b.headers["content-type"]) == (a.status_code, a.text, a.headers["content-type"])


@pytest.mark.parametrize(
    ("body", "ctype", "loc"),
    [
        ({"dataframe_split": {**SPLIT, "data": [[*SPLIT["data"][0][:1], "x", *SPLIT["data"][0][2:]]]}}, None, "[0][1]"),
        ({"dataframe_records": [ROW, {**ROW, "area": None}]}, None, "dataframe_records[1].area"),
        ({"inputs": {**{f: [ROW[f]] for f in FEATURES}, "texture": ["x"]}}, None, "inputs.texture[0]"),
        ({"instances": [[1.0, 2.0]]}, None, "instances[0]"),
        ("radius,texture\n1,2\n", "text/csv", "csv line 2"),
        (CSV.replace("122.8", "big"), "text/csv", "csv line 2, column perimeter"),
        ({"dataframe_records": ROWS, "params": [1]}, None, "params"),
    ],
)
def test_refusals_name_the_field(pair: dict[str, Any], body: Any, ctype: str | None, loc: str) -> None:
    _, ours = pair["classifier"]
    r = _post(ours, body, ctype or "application/json")
    assert r.status_code == 400, r.text
    assert loc in r.json()["details"][0]["loc"] and loc in r.json()["message"], r.json()
    assert "big" not in r.text


def test_arrays_of_values_in_input_order_are_taken_too(pair: dict[str, Any]) -> None:
    """`mlflow models serve` refuses `inputs: [[...]]` for a model with a column signature; taking the values in
    the signature's order answers what it would for the same rows as records."""
    theirs, ours = pair["classifier"]
    assert _post(ours, {"inputs": SPLIT["data"]}).json() == _post(theirs, {"dataframe_records": ROWS}).json()


def test_mlflow_scoring_client_against_a_real_process(tmp_path: Path, folders: dict[str, Path]) -> None:
    import mlflow.pyfunc
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    frames = {"classifier": pd.DataFrame(ROWS), "pyfunc": pd.DataFrame(PY), "untyped": pd.DataFrame(ROWS)}
    for kind, frame in frames.items():
        with run_predictor(tmp_path, MODEL_URI=str(folders[kind]), SERVICE_PATH=kind) as p:
            host, port = p.url.removeprefix("http://").split(":")
            client = ScoringServerClient(host, int(port))
            client.wait_server_ready(timeout=30)
            assert client.get_version() == mlflow.__version__
            got = client.invoke(frame).get_predictions()
            want = mlflow.pyfunc.load_model(str(folders[kind])).predict(frame)
            if isinstance(want, pd.DataFrame):
                pd.testing.assert_frame_equal(got, want, check_dtype=False)
            else:
                assert got.iloc[:, 0].tolist() == list(want), kind


def test_no_protocol_imports_pandas_or_scikit_learn_for_a_kernel_model(local_models: dict[str, Path]) -> None:
    """Every prediction route on the numpy kernel, the MLflow one with each of its forms and CSV included."""
    flat = [v for row in SPLIT["data"] for v in row]
    v2 = {"inputs": [{"name": "x", "shape": [2, 5], "datatype": "FP64", "data": flat}]}
    calls = [
        ("/m/api/v1/predict", {"records": ROWS}, "application/json"),
        ("/v1/models/m:predict", {"instances": SPLIT["data"]}, "application/json"),
        ("/v2/models/m/infer", v2, "application/json"),
        *[("/invocations", body, "application/json") for body in SAME["classifier"][:6]],
        ("/invocations", CSV, "text/csv"),
    ]
    script = f"""
import json, struct, sys
from starlette.testclient import TestClient
from custom_predictor.app import create_app
from custom_predictor.settings import Settings
app = create_app(Settings(model_uri={str(local_models["classifier"])!r}, service_path="m", verify_kernel=False))
with TestClient(app) as client:
    assert app.state.runtime.wait(60) and app.state.runtime.kind == "kernel", app.state.runtime.reason
    for path, body, ctype in {calls!r}:
        content = body if isinstance(body, str) else json.dumps(body)
        response = client.post(path, content=content, headers={{"content-type": ctype}})
        assert response.status_code == 200, (path, response.text)
    head = json.dumps({{"inputs": [{{"name": "x", "shape": [1, 5], "datatype": "FP64",
                                      "parameters": {{"binary_data_size": 40}}}}]}}).encode()
    response = client.post("/v2/models/m/infer", content=head + struct.pack("<5d", *{SPLIT["data"][0]!r}),
                           headers={{"inference-header-content-length": str(len(head))}})
    assert response.status_code == 200, response.text
print(sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "skops", "mlflow", "pandas", "scipy")))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"  # after the inference log's lines
