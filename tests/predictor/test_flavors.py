"""Every flavor the predictor serves, built for real here: typed API, KServe V1 and V2 answer what `mlflow.pyfunc`
answers on the same rows, exactly, and each model runs on the backend meant for it.

Models (tests/predictor/flavors.py): XGBoost (sklearn API and Booster), LightGBM (classifier, regressor,
Booster), PyTorch (tensor signatures float32 and float64; a DPM360-style model with a contract and a patient_id
lookup), scikit-learn with a ColumnTransformer and OneHotEncoder on a string column, and a custom PythonModel with
a DataFrame of several columns out. The reference: `mlflow.pyfunc.load_model(folder).predict` on the rows as a
DataFrame typed by the signature, or as an array of the tensor signature's dtype.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.predictor import flavors, models
from tests.predictor.conftest import in_process

KINDS = {
    "sklearn": "kernel",
    "xgboost": "xgboost",
    "xgboost-booster": "xgboost",
    "lightgbm": "lightgbm",
    "lightgbm-regressor": "lightgbm",
    "lightgbm-booster": "lightgbm",
    "pytorch-float32": "pytorch",
    "pytorch-float64": "pytorch",
    "pytorch-dpm360": "pytorch",
    "sklearn-column-transformer": "pyfunc",
    "pyfunc": "pyfunc",
}


@pytest.fixture(scope="session")
def flavor_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flavors")
    return {name: save(root / name) for name, save in flavors.SAVERS.items()}


@pytest.fixture(scope="module", params=list(KINDS))
def served(request: pytest.FixtureRequest, flavor_models: dict[str, Path]) -> Iterator[tuple[str, Path, Any]]:
    folder = flavor_models[request.param]
    with in_process(model_uri=str(folder), service_path="m", model_name=request.param) as client:
        assert client.app_state.runtime.ready, client.app_state.runtime.reason
        yield request.param, folder, client


def rows_for(contract: Any, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Rows in and around the training range (breast-cancer scale), of each input's type."""
    rng = np.random.default_rng(seed)
    x, _ = models.breast_cancer()
    low, high = x.min(axis=0), x.max(axis=0)
    rows = []
    for i in range(n):
        row: dict[str, Any] = {}
        for j, spec in enumerate(contract.inputs):
            k = j % x.shape[1]
            if spec.type == "double":
                row[spec.name] = float(rng.uniform(low[k] * 0.5, high[k] * 1.5))
            elif spec.type == "integer":
                row[spec.name] = int(rng.integers(0, 10))
            elif spec.type == "string":
                row[spec.name] = ["north", "south", "east"][i % 3]
            else:
                row[spec.name] = bool(i % 2)
        rows.append(row)
    return rows


def reference(folder: Path, rows: list[dict[str, Any]], names: list[str]) -> list[Any]:
    """pyfunc's predictions, as one JSON value per row (DataFrame columns, arrays row by row)."""
    import mlflow.pyfunc
    from mlflow.models import get_model_info

    model = mlflow.pyfunc.load_model(str(folder))
    signature = get_model_info(str(folder)).signature
    if signature is not None and signature.inputs.is_tensor_spec():
        dtype = signature.inputs.numpy_types()[0]
        out = model.predict(np.array([[r[n] for n in names] for r in rows], dtype=dtype))
    else:
        kinds = (
            dict(zip(signature.inputs.input_names(), signature.inputs.pandas_types(), strict=True)) if signature else {}
        )
        frame = pd.DataFrame({n: pd.Series([r[n] for r in rows], dtype=kinds.get(n, "float64")) for n in names})
        out = model.predict(frame)
    return _json(_rows(out))


def _json(value: Any) -> Any:
    """As JSON carries it: NaN becomes null."""
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return None if isinstance(value, float) and value != value else value


def _rows(out: Any) -> Any:
    if isinstance(out, pd.DataFrame):
        if len(out.columns) == 1:
            return out.iloc[:, 0].tolist()
        return [{str(k): v for k, v in r.items()} for r in out.to_dict(orient="records")]
    return np.asarray(out).tolist()


def test_typed_api_equals_pyfunc(served: tuple[str, Path, Any]) -> None:
    name, folder, client = served
    runtime = client.app_state.runtime
    assert runtime.kind == KINDS[name]
    rows = rows_for(runtime.contract, 120)
    r = client.post("/m/api/v1/predict", json={"records": rows})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == reference(folder, rows, runtime.contract.input_names)


def test_one_row_at_a_time_equals_pyfunc(served: tuple[str, Path, Any]) -> None:
    _, folder, client = served
    names = client.app_state.runtime.contract.input_names
    for row in rows_for(client.app_state.runtime.contract, 5, seed=3):
        r = client.post("/m/api/v1/predict", json={"records": [row]})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == reference(folder, [row], names)


def test_kserve_v1_and_v2_equal_pyfunc(served: tuple[str, Path, Any]) -> None:
    _, folder, client = served
    contract = client.app_state.runtime.contract
    names = contract.input_names
    rows = rows_for(contract, 30, seed=1)
    want = reference(folder, rows, names)
    v1 = client.post("/v1/models/m:predict", json={"instances": [[r[n] for n in names] for r in rows]})
    assert v1.status_code == 200, v1.text
    assert v1.json()["predictions"] == want
    datatype = {"double": "FP64", "integer": "INT64", "string": "BYTES", "boolean": "BOOL"}
    inputs = [
        {"name": s.name, "shape": [len(rows)], "datatype": datatype[s.type], "data": [r[s.name] for r in rows]}
        for s in contract.inputs
    ]
    v2 = client.post("/v2/models/m/infer", json={"inputs": inputs})
    assert v2.status_code == 200, v2.text
    outputs = v2.json()["outputs"]
    if want and isinstance(want[0], dict):
        assert {o["name"]: o["data"] for o in outputs} == {k: [w[k] for w in want] for k in want[0]}
    else:
        (out,) = outputs
        assert out["data"] == np.asarray(want).reshape(-1).tolist()
        assert out["shape"][0] == len(rows)


def test_dpm360_style_lookup_by_patient_id(flavor_models: dict[str, Path]) -> None:
    """A PyTorch model with a contract: `patient_id` resolves to its feature row, predicted as pyfunc predicts it."""
    folder = flavor_models["pytorch-dpm360"]
    with in_process(model_uri=str(folder), service_path="risk") as client:
        runtime = client.app_state.runtime
        assert runtime.kind == "pytorch" and runtime.contract.source == "contract"
        r = client.post("/risk/api/v1/model/predict", json={"patient_id": 1003})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["patient_id"] == 1003 and set(body["features"]) == set(models.FEATURES)
        assert body["predictions"] == reference(folder, [body["features"]], models.FEATURES)
        assert 0.0 <= body["predictions"][0] <= 1.0
        assert client.post("/risk/api/v1/model/predict", json={"patient_id": 5}).status_code == 404
        spec = client.get("/openapi.json").json()
        assert "risk" in json.dumps(spec["components"]["schemas"])  # the contract's output name is documented


def test_float32_tensor_models_self_test_with_their_input_example(flavor_models: dict[str, Path]) -> None:
    """The case that failed before: a float32 tensor signature, self-tested with its own input example."""
    with in_process(model_uri=str(flavor_models["pytorch-float32"]), service_path="t") as client:
        runtime = client.app_state.runtime
        assert runtime.ready and runtime.contract.test_data is not None and len(runtime.contract.test_data.rows) == 5
        assert [i.name for i in runtime.contract.inputs] == [f"x{i}" for i in range(5)]


def test_an_exported_program_runs_its_graph_once_the_module_answered_that_row_count(
    flavor_models: dict[str, Path],
) -> None:
    """pt2 through `torch.export.load`: a row count's first request goes through the module it gives (its shape
    guards), the next ones straight to the graph, with pyfunc's bits; a graph that disagrees with its module is
    never used."""
    folder = flavor_models["pytorch-float32"]
    with in_process(model_uri=str(folder), service_path="t") as client:
        runtime = client.app_state.runtime
        backend, names = runtime.backend, runtime.contract.input_names
        assert runtime.kind == "pytorch" and runtime.kernel_check is None
        module, calls = backend.module, []
        backend.module = lambda x: calls.append(int(x.shape[0])) or module(x)
        assert backend.direct is not None
        for n, seed in ((3, 0), (3, 1), (3, 2), (4, 3), (4, 4)):
            rows = rows_for(runtime.contract, n, seed=seed)
            r = client.post("/t/api/v1/predict", json={"records": rows})
            assert r.status_code == 200, r.text
            assert r.json()["predictions"] == reference(folder, rows, names)
        assert calls == [3, 4] and {3, 4} <= backend.checked

        graph = backend.direct
        backend.direct = lambda x: graph(x) + 1e-6  # a graph that is not its module
        rows = rows_for(runtime.contract, 7, seed=5)
        r = client.post("/t/api/v1/predict", json={"records": rows})
        assert r.status_code == 200 and r.json()["predictions"] == reference(folder, rows, names)
        assert backend.direct is None and 7 not in backend.checked
        calls.clear()
        r = client.post("/t/api/v1/predict", json={"records": rows_for(runtime.contract, 3)})
        assert r.status_code == 200 and calls == [3]  # the module serves every request from here on


def test_no_pyfunc_or_pandas_on_the_xgboost_path(flavor_models: dict[str, Path], tmp_path: Path) -> None:
    """The flavor backends call the library directly: serving an XGBoost model never imports mlflow.pyfunc."""
    import subprocess
    import sys

    folder = flavor_models["xgboost"]
    row = dict(zip(models.FEATURES, [17.0, 10.0, 120.0, 1000.0, 0.1], strict=True))
    code = (
        "import sys\n"
        "from starlette.testclient import TestClient\n"
        "from custom_predictor.app import create_app\n"
        "from custom_predictor.settings import Settings\n"
        f"app = create_app(Settings(model_uri={str(folder)!r}, service_path='m'))\n"
        "with TestClient(app) as c:\n"
        "    assert app.state.runtime.wait(60), app.state.runtime.reason\n"
        f"    r = c.post('/m/api/v1/predict', json={{'records': [{row!r}]}})\n"
        "    assert r.status_code == 200, r.text\n"
        "print(app.state.runtime.kind, 'mlflow.pyfunc' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["xgboost", "False"]
