"""The numpy kernels: pyfunc's outputs, bit for bit, for every covered model; no scikit-learn on the way.

Each case is a real model saved with `mlflow.sklearn.save_model` in one of the three serialization formats and
served by a Runtime; its predictions for several hundred rows (inside and far outside the training range)
must equal `mlflow.pyfunc.load_model(...).predict` element by element, in one batch and row by row. Then the
safety nets: the background check hands over to scikit-learn when a kernel disagrees, rows the kernel leaves
to scikit-learn reach it, files skops would refuse are refused, and reading a file executes nothing.
"""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from custom_predictor import kernels, modelfile
from custom_predictor.check import probe_matrix
from custom_predictor.outputs import to_list
from custom_predictor.runtime import ModelRejectedInput, Runtime
from tests.predictor import models
from tests.predictor.conftest import in_process
from tests.predictor.test_fast_path import predict_rows, pyfunc_outputs, random_rows, runtime_for, save

REPO = Path(__file__).resolve().parents[2]
TRUST_TREE = {"skops_trusted_types": ["sklearn.tree._tree.Tree"]}


INTEGER_SCALE = np.array([10, 10, 10, 1, 10_000])
"""The integer versions of the five features: a tenth of a millimetre (radius, perimeter), whole square
millimetres (area), ten-thousandths (smoothness)."""


def _data(target: str) -> tuple[pd.DataFrame, Any]:
    x, y = models.breast_cancer()
    if target.startswith("integers-"):
        ints = pd.DataFrame(np.round(x * INTEGER_SCALE).astype(np.int64), columns=models.FEATURES)
        return ints, _data(target.removeprefix("integers-"))[1]
    frame = pd.DataFrame(x, columns=models.FEATURES)
    if target == "labels":
        return frame, np.array(["malignant", "benign"])[y]
    if target == "three":
        return frame, np.digitize(x[:, 3], [500, 900])  # three classes by area
    if target == "value":
        return frame, x[:, 0] * 3.5 - x[:, 4] * 100 + y
    if target == "two-values":
        return frame, np.c_[x[:, 0] * 2, x[:, 1] - x[:, 2]]
    return frame, y


def _sk(name: str, **kw: Any) -> Any:
    import importlib

    module, _, cls = name.rpartition(".")
    return getattr(importlib.import_module(f"sklearn.{module}"), cls)(**kw)


def _pipe(*steps: Any) -> Any:
    from sklearn.pipeline import make_pipeline

    return make_pipeline(*steps)


# name -> (build estimator, target, format, predict_fn, extra save kwargs)
CASES: dict[str, tuple[Callable[[], Any], str, str, str, dict[str, Any]]] = {
    "scaled-logistic-skops-predict": (
        lambda: _pipe(_sk("preprocessing.StandardScaler"), _sk("linear_model.LogisticRegression", max_iter=2000)),
        "binary",
        "skops",
        "predict",
        {},
    ),
    "scaled-logistic-skops-proba": (
        lambda: _pipe(_sk("preprocessing.StandardScaler"), _sk("linear_model.LogisticRegression", max_iter=2000)),
        "binary",
        "skops",
        "predict_proba",
        {},
    ),
    "logistic-string-labels-pickle": (
        lambda: _pipe(_sk("preprocessing.MinMaxScaler", clip=True), _sk("linear_model.LogisticRegression")),
        "labels",
        "pickle",
        "predict",
        {},
    ),
    "logistic-three-classes-proba-cloudpickle": (
        lambda: _pipe(_sk("preprocessing.RobustScaler"), _sk("linear_model.LogisticRegression", max_iter=3000)),
        "three",
        "cloudpickle",
        "predict_proba",
        {},
    ),
    "linear-regression-skops": (
        lambda: _pipe(_sk("preprocessing.MaxAbsScaler"), _sk("linear_model.LinearRegression")),
        "value",
        "skops",
        "predict",
        {},
    ),
    "ridge-two-outputs-skops": (lambda: _sk("linear_model.Ridge", alpha=0.5), "two-values", "skops", "predict", {}),
    "linear-regression-integer-inputs-skops": (
        lambda: _sk("linear_model.LinearRegression"),
        "integers-value",
        "skops",
        "predict",
        {},
    ),
    "logistic-integer-inputs-proba-pickle": (
        lambda: _sk("linear_model.LogisticRegression", max_iter=5000),
        "integers-binary",
        "pickle",
        "predict_proba",
        {},
    ),
    "lasso-pickle": (lambda: _sk("linear_model.Lasso", alpha=0.05, max_iter=5000), "value", "pickle", "predict", {}),
    "imputed-elasticnet-skops": (
        lambda: _pipe(
            _sk("impute.SimpleImputer", strategy="median"),
            _sk("preprocessing.StandardScaler", with_mean=False),
            _sk("linear_model.ElasticNet", alpha=0.01, max_iter=5000),
        ),
        "value",
        "skops",
        "predict",
        {"skops_trusted_types": ["numpy.dtype"]},  # the imputer's fill dtype: skops trusts it only if told
    ),
    "tree-regressor-skops-trusted": (
        lambda: _sk("tree.DecisionTreeRegressor", random_state=0),
        "value",
        "skops",
        "predict",
        TRUST_TREE,
    ),
    "tree-classifier-proba-pickle": (
        lambda: _sk("tree.DecisionTreeClassifier", max_depth=6, random_state=0),
        "three",
        "pickle",
        "predict_proba",
        {},
    ),
    "forest-classifier-skops-trusted": (
        lambda: _sk("ensemble.RandomForestClassifier", n_estimators=30, random_state=0),
        "labels",
        "skops",
        "predict",
        TRUST_TREE,
    ),
    "forest-classifier-proba-cloudpickle": (
        lambda: _sk("ensemble.RandomForestClassifier", n_estimators=25, max_depth=8, random_state=1),
        "three",
        "cloudpickle",
        "predict_proba",
        {},
    ),
    "forest-regressor-pickle": (
        lambda: _sk("ensemble.RandomForestRegressor", n_estimators=20, random_state=0),
        "value",
        "pickle",
        "predict",
        {},
    ),
    "extra-trees-classifier-pickle": (
        lambda: _sk("ensemble.ExtraTreesClassifier", n_estimators=15, random_state=0),
        "binary",
        "pickle",
        "predict",
        {},
    ),
    "extra-trees-regressor-skops-trusted": (
        lambda: _sk("ensemble.ExtraTreesRegressor", n_estimators=15, random_state=0),
        "value",
        "skops",
        "predict",
        TRUST_TREE,
    ),
}


def _rows(case: str, n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Request rows for a case: 0.8x..1.2x of the training range (every branch side), integers where needed."""
    rows = random_rows(n, models.FEATURES, seed=seed)
    if not CASES[case][1].startswith("integers-"):
        return rows
    scale = dict(zip(models.FEATURES, INTEGER_SCALE.tolist(), strict=True))
    return [{f: round(v * scale[f]) for f, v in row.items()} for row in rows]


def _saved(tmp_path: Path, case: str) -> Path:
    build, target, fmt, fn, extra = CASES[case]
    frame, y = _data(target)
    model = build().fit(frame, y)
    return save(tmp_path / case, model, frame.iloc[:10], fmt=fmt, predict_fn=fn, **extra)


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_equals_pyfunc(tmp_path: Path, case: str) -> None:
    folder = _saved(tmp_path, case)
    rt = runtime_for(folder, verify_kernel=False)
    assert rt.kind == "kernel", rt.kind
    rows = _rows(case, 400, seed=11)
    assert predict_rows(rt, rows) == pyfunc_outputs(folder, rows)  # exactly equal, element by element
    for row in rows[:25]:  # one row at a time too (BLAS may round one row apart from a batch: so does pyfunc)
        assert predict_rows(rt, [row]) == pyfunc_outputs(folder, [row])


@pytest.mark.parametrize("case", ["forest-regressor-pickle", "forest-classifier-proba-cloudpickle"])
def test_large_batches_equal_pyfunc(tmp_path: Path, case: str) -> None:
    """3,000 rows x 20-25 trees: the forest is walked tree after tree (bounded memory), with the same sums."""
    folder = _saved(tmp_path, case)
    rt = runtime_for(folder, verify_kernel=False)
    rows = _rows(case, 3000, seed=5)
    assert predict_rows(rt, rows) == pyfunc_outputs(folder, rows)


def test_a_forest_fitted_with_several_jobs_adds_its_trees_in_order(tmp_path: Path) -> None:
    """scikit-learn's own threads add the trees in whatever order they finish (last bits vary from call to
    call); the kernel, and the predictor's scikit-learn path, add them in order as one job does."""
    frame, y = _data("three")
    model = _sk("ensemble.RandomForestClassifier", n_estimators=40, n_jobs=2, random_state=0).fit(frame, y)
    folder = save(tmp_path / "jobs", model, frame.iloc[:10], fmt="pickle", predict_fn="predict_proba")
    rows = random_rows(500, models.FEATURES)
    model.set_params(n_jobs=None)
    in_order = to_list(model.predict_proba(np.asfortranarray(pd.DataFrame(rows).to_numpy())))
    assert predict_rows(runtime_for(folder, verify_kernel=False), rows) == in_order
    assert predict_rows(runtime_for(folder, kernels=False), rows) == in_order


def test_integer_inputs_out_of_range_or_missing_are_rejected_as_scikit_learn_path_does(tmp_path: Path) -> None:
    folder = _saved(tmp_path, "linear-regression-integer-inputs-skops")
    data = _signature_contract()
    for spec in data["inputs"]:
        spec["type"] = "integer"
    data["inputs"][1]["required"] = False
    (folder / "contract.yaml").write_text(yaml.safe_dump(data))
    row = _rows("linear-regression-integer-inputs-skops", 1)[0]
    for kw in ({"verify_kernel": False}, {"kernels": False}):
        rt = runtime_for(folder, **kw)
        with pytest.raises(ModelRejectedInput):  # no NaN in an int64 matrix: pyfunc refuses the schema too
            predict_rows(rt, [{k: v for k, v in row.items() if k != "texture"}])
    with in_process(model_uri=str(folder), service_path="m", verify_kernel=False) as client:  # beyond int64
        r = client.post("/m/api/v1/predict", json={"records": [{**row, "area": 2**70}]})
        assert r.status_code == 422 and r.json()["details"][0]["loc"] == "records[0].area", r.text


def test_imputer_kernel_fills_missing_values_like_scikit_learn(tmp_path: Path) -> None:
    folder = _saved(tmp_path, "imputed-elasticnet-skops")
    data = _signature_contract()
    for spec in data["inputs"][1:3]:
        spec["required"] = False
    (folder / "contract.yaml").write_text(yaml.safe_dump(data))
    rt = runtime_for(folder, verify_kernel=False)
    assert rt.kind == "kernel"
    rows = random_rows(50, models.FEATURES)
    for n, row in enumerate(rows):
        row.pop(models.FEATURES[1 + n % 2])
    assert predict_rows(rt, rows) == pyfunc_outputs(folder, [{**r, **_nan_for_missing(r)} for r in rows])


def _nan_for_missing(row: dict[str, Any]) -> dict[str, float]:
    return {f: float("nan") for f in models.FEATURES if f not in row}


def _signature_contract() -> dict[str, Any]:
    """A contract with the classifier's five double inputs, all required (tests make some optional)."""
    return {"version": 1, "inputs": [{"name": f, "type": "double"} for f in models.FEATURES], "outputs": []}


def test_rows_the_kernel_leaves_go_to_scikit_learn(tmp_path: Path) -> None:
    """A NaN into a forest: scikit-learn's trees route it (missing_go_to_left); the kernel steps aside."""
    folder = _saved(tmp_path, "forest-regressor-pickle")
    data = _signature_contract()
    data["inputs"][0]["required"] = False
    (folder / "contract.yaml").write_text(yaml.safe_dump(data))
    rt = runtime_for(folder, verify_kernel=False)
    assert rt.kind == "kernel"
    rows = random_rows(10, models.FEATURES)
    rows[3].pop("radius")
    assert predict_rows(rt, rows) == pyfunc_outputs(folder, [{**r, **_nan_for_missing(r)} for r in rows])
    assert rt.kind == "kernel"  # the kernel still serves the next request


def test_a_missing_value_the_model_cannot_take_is_rejected_input(tmp_path: Path) -> None:
    folder = _saved(tmp_path, "scaled-logistic-skops-predict")
    data = _signature_contract()
    data["inputs"][2]["required"] = False
    (folder / "contract.yaml").write_text(yaml.safe_dump(data))
    rt = runtime_for(folder, verify_kernel=False)
    row = random_rows(1, models.FEATURES)[0]
    row.pop("perimeter")
    with pytest.raises(ModelRejectedInput):  # scikit-learn's ValueError: the input contains NaN
        predict_rows(rt, [row])


def test_background_check_passes_for_a_faithful_kernel(tmp_path: Path) -> None:
    rt = runtime_for(_saved(tmp_path, "forest-classifier-proba-cloudpickle"))
    assert rt.kind == "kernel" and rt.wait_checked(120)
    assert (rt.kind, rt.kernel_check) == ("kernel", "passed")


def test_a_check_that_cannot_run_hands_over_to_scikit_learn(tmp_path: Path) -> None:
    """Verification fails closed: the check's child process dies before answering (a `sitecustomize` on the
    predictor's PYTHONPATH ends every spawned child at once, as an OOM kill would), so the kernel is unverified
    and scikit-learn serves from then on; /metrics says which happened."""
    import time

    from tests.predictor.conftest import ROW, run_predictor

    folder = _saved(tmp_path, "forest-classifier-proba-cloudpickle")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import os\nif b'--multiprocessing-fork' in open('/proc/self/cmdline', 'rb').read():\n    os._exit(9)\n"
    )
    with run_predictor(tmp_path, MODEL_URI=str(folder), SERVICE_PATH="m", PYTHONPATH=str(hooks)) as p:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            metrics = p.get("/metrics")[1]
            if 'kind="kernel"' not in metrics:  # the hand-over is done
                break
            time.sleep(0.2)
        assert 'kernel_check="unavailable"' in metrics and 'kind="sklearn-fast"' in metrics, metrics
        status, body = p.post("/m/api/v1/predict", {"records": [ROW]})
        assert status == 200, body
        assert body["predictions"] == pyfunc_outputs(folder, [ROW])
        assert "serving with the library from now on (kernel check: unavailable)" in p.log.read_text()


def test_background_check_hands_over_when_the_kernel_disagrees(tmp_path: Path) -> None:
    """The safety net: a kernel one unit in the last place off loses to scikit-learn."""
    folder = _saved(tmp_path, "linear-regression-skops")
    rt = runtime_for(folder, verify_kernel=False)
    faithful = rt.backend.kernel
    rt.backend.kernel = lambda x: np.nextafter(faithful(x), np.inf)  # a kernel with the subtlest defect
    rt.check_kernel()
    assert (rt.kind, rt.kernel_check) == ("sklearn-fast", "mismatch")
    rows = random_rows(30, models.FEATURES)
    assert predict_rows(rt, rows) == pyfunc_outputs(folder, rows)


def test_background_check_compares_the_rows_the_kernel_takes(tmp_path: Path) -> None:
    """Probe rows beyond float32 go to scikit-learn (a tree compares float32); the rest are still compared."""
    frame, y = _data("value")
    example = frame.iloc[:3].copy()
    example["area"] = 2e38  # within float32: the self-test passes; the probe rows spread beyond it
    model = _sk("tree.DecisionTreeRegressor", max_depth=5, random_state=0).fit(frame, y)
    folder = save(tmp_path / "huge", model, example, fmt="pickle")
    rt = runtime_for(folder, verify_kernel=False)
    x, _ = rt.backend.probe(rt.self_test_rows())
    assert 0 < len(x) < len(probe_matrix(rt.contract, rt.self_test_rows(), np.float64))
    faithful = rt.backend.kernel
    rt.backend.kernel = lambda x: np.nextafter(faithful(x), np.inf)
    rt.check_kernel()
    assert (rt.kind, rt.kernel_check) == ("sklearn-fast", "mismatch")


def test_the_checks_child_process_is_killed_or_reported() -> None:
    import multiprocessing
    import os
    from concurrent.futures import CancelledError

    from custom_predictor.check import run_in_child

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        run_in_child(time.sleep, (60,), 1.0)
    assert time.monotonic() - started < 10 and multiprocessing.active_children() == []
    with pytest.raises(RuntimeError, match="ValueError: invalid literal"):
        run_in_child(int, ("x",), 60)
    with pytest.raises(RuntimeError, match="died"):
        run_in_child(os._exit, (3,), 60)
    assert run_in_child(sum, ([1, 2],), 60) == 3
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    with pytest.raises(CancelledError):
        run_in_child(time.sleep, (60,), 60, cancel)
    assert multiprocessing.active_children() == []


def test_the_checks_child_dies_with_the_predictor() -> None:
    """A predictor killed while its check runs leaves nothing behind (PR_SET_PDEATHSIG)."""
    import psutil

    script = "import threading, time, os\nfrom custom_predictor.check import run_in_child\n"
    script += "threading.Thread(target=run_in_child, args=(time.sleep, (120,), 300), daemon=True).start()\n"
    script += "time.sleep(60)\n"
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        children: list[Any] = []
        deadline = time.monotonic() + 30
        while not children and time.monotonic() < deadline:  # the child runs its task once it is at nice 10
            time.sleep(0.1)
            spawned = [c for c in psutil.Process(parent.pid).children() if "spawn_main" in " ".join(c.cmdline())]
            children = [c for c in spawned if c.nice() == 10]
        assert children, "the check's child did not start its task"
    finally:
        parent.kill()
        parent.wait(10)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [] and len(gone) == len(children)


def test_a_closed_runtime_starts_no_check(tmp_path: Path) -> None:
    from custom_predictor.app import resolve_contract
    from custom_predictor.settings import Settings
    from custom_predictor.source import fetch

    src = fetch(Settings(model_uri=str(_saved(tmp_path, "lasso-pickle"))))
    rt = Runtime(src.model_dir, src.mlmodel, resolve_contract(src)[0])
    rt.close()  # the server stopped while the model loaded
    rt.load()
    assert rt.kind == "kernel" and rt.wait_checked(1) and rt.kernel_check is None


def test_a_tree_shared_by_a_forest_is_stored_once(tmp_path: Path) -> None:
    """skops keeps one copy of an object referenced many times; so does the kernel (no blow-up at compile)."""
    import skops.io

    frame, y = _data("value")
    forest = _sk("ensemble.RandomForestRegressor", n_estimators=2, random_state=0).fit(frame, y)
    forest.estimators_ = [forest.estimators_[0]] * 300
    forest.n_estimators = 300
    skops.io.dump(forest, tmp_path / "m.skops")
    obj = modelfile.read(tmp_path / "m.skops", "skops", [modelfile.TREE], kernels.CLASSES)
    trees = [m.state["tree_"] for m in obj.state["estimators_"]]
    assert len({id(t) for t in trees}) == 1
    assert len(kernels._Forest(trees, 5, 1).threshold) == forest.estimators_[0].tree_.node_count
    x = np.asfortranarray(frame.to_numpy()[:50])
    assert kernels.compile_model(obj, "predict", 5)(x).tolist() == forest.predict(x).tolist()


@pytest.mark.parametrize(
    ("case", "untrusted"),
    [("tree-regressor-skops-trusted", "sklearn.tree._tree.Tree"), ("imputed-elasticnet-skops", "numpy.dtype")],
)
def test_a_type_skops_does_not_trust_is_refused_as_mlflow_refuses_it(tmp_path: Path, case: str, untrusted: str) -> None:
    folder = _saved(tmp_path, case)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    sk = mlmodel["flavors"]["sklearn"]
    sk["skops_trusted_types"] = None  # MLflow refuses to save it so; a hand-edited MLmodel can still say it
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(modelfile.ModelFileError, match=f"does not trust by default: {re.escape(untrusted)}$"):
        modelfile.read(folder / sk["pickled_model"], "skops", None, kernels.CLASSES)
    from custom_predictor.app import resolve_contract
    from custom_predictor.settings import Settings
    from custom_predictor.source import fetch

    src = fetch(Settings(model_uri=str(folder)))
    rt = Runtime(src.model_dir, src.mlmodel, resolve_contract(src)[0])
    rt.load()
    assert rt.state == "failed" and f"Untrusted types found in the file: ['{untrusted}']" in (rt.reason or "")


@pytest.mark.parametrize(
    "build",
    [
        lambda: _sk("svm.SVC"),
        lambda: _pipe(_sk("preprocessing.PolynomialFeatures"), _sk("linear_model.LinearRegression")),
        lambda: _sk("ensemble.GradientBoostingClassifier", n_estimators=5),
    ],
    ids=["svc", "polynomial-features", "gradient-boosting"],
)
def test_models_outside_the_kernels_use_scikit_learn(tmp_path: Path, build: Callable[[], Any]) -> None:
    frame, y = _data("binary")
    folder = save(tmp_path / "m", build().fit(frame, y), frame[:5], fmt="pickle")
    rt = runtime_for(folder)
    assert rt.kind == "sklearn-fast" and rt.kernel_check is None
    rows = random_rows(20, models.FEATURES)
    assert predict_rows(rt, rows) == pyfunc_outputs(folder, rows)


def test_unsupported_parts_are_named() -> None:
    scaler = modelfile.Obj("sklearn.preprocessing._data.StandardScaler", {"with_mean": True, "with_std": True})
    with pytest.raises(kernels.Unsupported, match=r"StandardScaler\.mean_"):
        kernels.compile_model(
            modelfile.Obj("sklearn.pipeline.Pipeline", {"steps": [("s", scaler), ("m", scaler)]}), "predict", 3
        )
    with pytest.raises(kernels.Unsupported, match="method decision_function"):
        kernels.compile_model(scaler, "decision_function", 3)


def test_a_tree_with_out_of_range_children_is_refused() -> None:
    nodes = np.zeros(3, dtype=[("left_child", "<i8"), ("right_child", "<i8"), ("feature", "<i8"), ("threshold", "<f8")])
    nodes[0] = (1, 7, 0, 0.5)  # right child 7 of a 3-node tree
    nodes[1] = nodes[2] = (-1, -1, -2, -2.0)
    tree = modelfile.Obj(
        modelfile.TREE,
        {"max_depth": 1, "node_count": 3, "nodes": nodes, "values": np.ones((3, 1, 1))},
        (2, np.array([1]), 1),
    )
    regressor = modelfile.Obj("sklearn.tree._classes.DecisionTreeRegressor", {"n_outputs_": 1, "tree_": tree})
    with pytest.raises(kernels.Unsupported, match="out of range"):
        kernels.compile_model(regressor, "predict", 2)


def test_a_pickle_asking_for_too_much_memory_is_a_model_file_error(tmp_path: Path) -> None:
    class Huge:
        def __reduce__(self) -> Any:
            return (np.ndarray, ((2**50,),))  # one of the numpy constructors the reader does call

    (tmp_path / "huge.pkl").write_bytes(pickle.dumps(Huge()))
    with pytest.raises(modelfile.ModelFileError, match="MemoryError"):
        modelfile.read(tmp_path / "huge.pkl", "pickle", None, kernels.CLASSES)


def test_reading_a_model_file_imports_and_runs_nothing(tmp_path: Path) -> None:
    """The kernel path reads skops and pickles in a process that never imports scikit-learn."""
    skops_model = _saved(tmp_path, "forest-classifier-skops-trusted")
    pickled = _saved(tmp_path, "scaled-logistic-skops-proba")
    evil = tmp_path / "evil.pkl"
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> Any:
            return (subprocess.call, (["touch", str(marker)],))

    evil.write_bytes(pickle.dumps({"model": Evil()}))
    script = f"""
import sys
from pathlib import Path
from custom_predictor import modelfile, kernels
evil = modelfile.read(Path({str(evil)!r}), "pickle", None, kernels.CLASSES)
assert isinstance(evil["model"], modelfile.Obj) and evil["model"].cls == "subprocess.call", evil
obj = modelfile.read(Path({str(skops_model / "model.skops")!r}), "skops", ["sklearn.tree._tree.Tree"], kernels.CLASSES)
kernels.compile_model(obj, "predict", 5)
obj = modelfile.read(Path({str(pickled / "model.skops")!r}), "skops", None, kernels.CLASSES)
kernels.compile_model(obj, "predict_proba", 5)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "skops", "mlflow", "pandas")))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert not marker.exists()


def test_a_served_prediction_imports_no_scikit_learn(tmp_path: Path) -> None:
    """The whole app (settings, contract from the signature, routes, self-test, a prediction) on the kernel."""
    folder = _saved(tmp_path, "forest-classifier-proba-cloudpickle")
    body = {"records": random_rows(3, models.FEATURES)}
    script = f"""
import sys
from starlette.testclient import TestClient
from custom_predictor.app import create_app
from custom_predictor.settings import Settings
app = create_app(Settings(model_uri={str(folder)!r}, service_path="m", verify_kernel=False))
with TestClient(app) as client:
    assert app.state.runtime.wait(60), app.state.runtime.reason
    response = client.post("/m/api/v1/predict", json={body!r})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 3, response.text
    assert app.state.runtime.kind == "kernel"
print(sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "skops", "mlflow", "pandas", "scipy")))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"  # after the inference log's lines
