"""The HTTP API in-process (httpx via Starlette's TestClient, and httpx.ASGITransport) on real saved models."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.predictor import models
from tests.predictor.conftest import ROW, in_process

PATH = "breast-cancer-risk"
API = f"/{PATH}/api/v1"


@pytest.fixture(scope="module")
def classifier(local_models: dict[str, Path]) -> Any:
    with in_process(model_uri=str(local_models["classifier"]), model_name="Breast Cancer_Risk") as c:
        yield c


@pytest.fixture(scope="module")
def contract_client(local_models: dict[str, Path]) -> Any:
    with in_process(model_uri=str(local_models["contract"]), model_name="Breast Cancer_Risk", model_version="4") as c:
        yield c


@pytest.fixture(scope="module")
def pyfunc(local_models: dict[str, Path]) -> Any:
    with in_process(model_uri=str(local_models["pyfunc"]), service_path="linear") as c:
        yield c


def expected_for(rows: list[dict]) -> list[int]:
    import pandas as pd

    model = models._fit_classifier()
    return [int(v) for v in model.predict(pd.DataFrame(rows, columns=models.FEATURES))]


def test_predict_records(classifier: Any) -> None:
    x, _ = models.breast_cancer(40)
    rows = [dict(zip(models.FEATURES, map(float, r), strict=True)) for r in x]
    r = classifier.post(f"{API}/predict", json={"records": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"] == expected_for(rows)
    assert body["model"] == "Breast Cancer_Risk"
    assert "labels" not in body
    assert classifier.app_state.runtime.kind == "kernel"


def test_integers_are_accepted_for_doubles(classifier: Any) -> None:
    row = {**ROW, "area": 1001}
    assert classifier.post(f"{API}/predict", json={"records": [row]}).json()["predictions"] == expected_for([row])


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({"records": [{**ROW, "radius": "big"}]}, "records[0].radius", "float_type"),
        ({"records": [ROW, {k: v for k, v in ROW.items() if k != "area"}]}, "records[1].area", "missing"),
        ({"records": [{**ROW, "age": 3}]}, "records[0].age", "extra_forbidden"),
        ({"records": [{**ROW, "radius": True}]}, "records[0].radius", "float_type"),
        ({"records": []}, "records", "too_short"),
        ({"rows": [ROW]}, "records", "missing"),
        ([ROW], "body", "model_type"),
    ],
)
def test_invalid_input_is_422_with_field_path(classifier: Any, body: Any, loc: str, kind: str) -> None:
    r = classifier.post(f"{API}/predict", json=body)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["error"] == "invalid_input"
    assert {"loc": loc, "type": kind} in [{"loc": d["loc"], "type": d["type"]} for d in err["details"]], err
    assert "big" not in r.text  # the input is not echoed


def test_range_and_allowed_values_come_from_the_contract(contract_client: Any) -> None:
    r = contract_client.post(f"{API}/predict", json={"records": [{**ROW, "radius": -1.0}]})
    assert r.status_code == 422
    assert r.json()["details"][0]["loc"] == "records[0].radius"
    assert "greater than or equal to 0" in r.json()["details"][0]["msg"]


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        (b"{not json", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"", "application/json"),
        (b"radius=1", "application/x-www-form-urlencoded"),
    ],
)
def test_a_body_that_is_not_json_is_400_or_422(classifier: Any, content: bytes, ctype: str) -> None:
    r = classifier.post(f"{API}/predict", content=content, headers={"content-type": ctype})
    assert r.status_code in (400, 422), r.text
    assert r.json()["error"] in ("invalid_json", "invalid_input")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/other-model:predict"),
        ("GET", "/v1/models/other-model"),
        ("POST", "/v2/models/other-model/infer"),
        ("GET", "/v2/models/other-model"),
        ("GET", "/v2/models/other-model/ready"),
        ("POST", "/v2/models/other-model/versions/1/infer"),
        ("POST", f"/v2/models/{PATH}/versions/7/infer"),
        ("GET", f"/v2/models/{PATH}/versions/7"),
    ],
)
def test_another_model_name_or_version_is_404_on_every_route(classifier: Any, method: str, path: str) -> None:
    r = classifier.request(method, path, json={"instances": [ROW]} if "v1" in path else {"inputs": []})
    assert (r.status_code, r.json()["code"]) == (404, "not_found"), r.text
    assert "only" in r.json()["error"]


def test_unknown_paths_and_methods(classifier: Any) -> None:
    assert classifier.get("/nothing/here").json()["error"] == "not_found"
    r = classifier.get(f"{API}/predict")
    assert (r.status_code, r.json()["error"]) == (405, "method_not_allowed")


def test_v1_predict_objects_and_lists(classifier: Any) -> None:
    want = expected_for([ROW])
    assert classifier.post(f"/v1/models/{PATH}:predict", json={"instances": [ROW]}).json() == {"predictions": want}
    as_list = [ROW[f] for f in models.FEATURES]
    assert classifier.post(f"/v1/models/{PATH}:predict", json={"instances": [as_list]}).json()["predictions"] == want
    r = classifier.post(f"/v1/models/{PATH}:predict", json={"instances": [[1.0, 2.0]]})
    assert r.status_code == 422 and r.json()["details"][0]["loc"] == "instances[0]"
    r = classifier.post(f"/v1/models/{PATH}:predict", json={"instances": [{**ROW, "texture": None}]})
    assert r.status_code == 422 and r.json()["details"][0]["loc"] == "instances[0].texture"
    r = classifier.post(f"/v1/models/{PATH}:predict", json={"instances": [as_list, [*as_list[:3], "x", 0.1]]})
    assert r.status_code == 422 and [d["loc"] for d in r.json()["details"]] == ["instances[1][3]"], r.text


def test_v2_columns_and_single_tensor(classifier: Any) -> None:
    x, _ = models.breast_cancer(3)
    rows = [dict(zip(models.FEATURES, map(float, r), strict=True)) for r in x]
    want = expected_for(rows)
    columns = [{"name": f, "shape": [3], "datatype": "FP64", "data": [r[f] for r in rows]} for f in models.FEATURES]
    r = classifier.post(f"/v2/models/{PATH}/infer", json={"id": "abc", "inputs": columns})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == PATH and body["id"] == "abc"
    assert body["outputs"] == [{"name": "prediction", "shape": [3], "datatype": "INT64", "data": want}]
    tensor = {
        "name": "input-0",
        "shape": [3, 5],
        "datatype": "FP64",
        "data": [r[f] for r in rows for f in models.FEATURES],
    }
    assert classifier.post(f"/v2/models/{PATH}/infer", json={"inputs": [tensor]}).json()["outputs"][0]["data"] == want
    nested = {**tensor, "data": [[r[f] for f in models.FEATURES] for r in rows]}
    assert classifier.post(f"/v2/models/{PATH}/infer", json={"inputs": [nested]}).json()["outputs"][0]["data"] == want


@pytest.mark.parametrize(
    ("inputs", "loc"),
    [
        ([{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}], "inputs[0].shape"),
        ([{"name": "input-0", "shape": [2, 5], "datatype": "FP64", "data": [1, 2, 3]}], "inputs[0].data"),
        ([{"name": "radius", "shape": [1], "datatype": "FP64", "data": [1.0]}], "inputs"),
        (
            [
                *[{"name": f, "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]} for f in models.FEATURES[1:]],
                {"name": "radius", "shape": [2], "datatype": "FP64", "data": [1.0, "x"]},
            ],
            "inputs[4].data[1]",
        ),
        (
            [
                *[{"name": f, "shape": [1, 1], "datatype": "FP64", "data": [[1.0]]} for f in models.FEATURES[1:]],
                {"name": "radius", "shape": [1, 1], "datatype": "FP64", "data": [["x"]]},
            ],
            "inputs[4].data[0][0]",
        ),
        (
            [{"name": "x", "shape": [2, 5], "datatype": "FP64", "data": [1.0] * 7 + ["x", 1.0, 1.0]}],
            "inputs[0].data[7]",
        ),
        (
            [{"name": "x", "shape": [2, 5], "datatype": "FP64", "data": [[1.0] * 5, [1.0, 1.0, "x", 1.0, 1.0]]}],
            "inputs[0].data[1][2]",
        ),
        (
            [
                {"name": "radius", "shape": [1], "datatype": "BYTES", "data": ["x"]},
                *[{"name": f, "shape": [1], "datatype": "FP64", "data": [1.0]} for f in models.FEATURES[1:]],
            ],
            "inputs[0].datatype",
        ),
        ([{"name": "input-0", "shape": [1, 5], "datatype": "BOOL", "data": [True] * 5}], "inputs[0].datatype"),
        ([{"name": "input-0", "shape": [0, 5], "datatype": "FP64", "data": []}], "inputs[0].shape"),
    ],
)
def test_v2_errors_name_the_tensor(classifier: Any, inputs: list, loc: str) -> None:
    r = classifier.post(f"/v2/models/{PATH}/infer", json={"inputs": inputs})
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["loc"] == loc, r.json()


def test_v2_metadata_and_health(classifier: Any) -> None:
    meta = classifier.get(f"/v2/models/{PATH}").json()
    assert meta["name"] == PATH and meta["platform"] == "mlflow-sklearn"
    assert meta["inputs"][0] == {"name": "radius", "datatype": "FP64", "shape": [-1]}
    assert classifier.get(f"/v2/models/{PATH}/ready").json() == {"name": PATH, "ready": True}
    assert classifier.get("/v2/health/live").json() == {"live": True}
    assert classifier.get("/v2/health/ready").json() == {"ready": True}
    assert classifier.get("/healthz").status_code == 200
    assert classifier.get(f"/v1/models/{PATH}").json() == {"name": PATH, "ready": True}


def test_metrics(classifier: Any) -> None:
    classifier.post(f"{API}/predict", json={"records": [ROW]})
    classifier.post(f"{API}/predict", json={"records": []})
    text = classifier.get("/metrics").text
    assert f'predictor_requests_total{{method="POST",route="/{PATH}/api/v1/predict",status="200"}}' in text
    assert f'predictor_requests_total{{method="POST",route="/{PATH}/api/v1/predict",status="422"}}' in text
    assert f'predictor_request_seconds_bucket{{le="0.005",method="POST",route="/{PATH}/api/v1/predict"}}' in text
    assert "predictor_model_load_seconds " in text and "predictor_model_ready 1.0" in text
    assert classifier.app_state.runtime.wait_checked(120)
    assert 'predictor_runtime_info{kernel_check="passed",kind="kernel"} 1.0' in classifier.get("/metrics").text
    classifier.get("/random/path/1")
    assert 'route="unmatched"' in classifier.get("/metrics").text


def test_openapi_documents_kserve_names_and_error_bodies(classifier: Any) -> None:
    spec = classifier.get("/openapi.json").json()
    op = spec["paths"]["/v2/models/{name}/infer"]["post"]
    (name,) = op["parameters"]
    assert name["examples"] == {"this predictor's model": {"value": PATH}} and PATH in name["description"]
    responses = {code: r for code, r in op["responses"].items() if code != "200"}
    examples = {code: r["content"]["application/json"]["example"]["code"] for code, r in responses.items()}
    assert examples == {
        "400": "invalid_json",
        "401": "unauthenticated",
        "403": "forbidden",
        "404": "not_found",
        "413": "too_large",
        "422": "invalid_input",
        "500": "model_error",
        "503": "not_ready",
    }


def test_openapi_documents_the_contract(contract_client: Any) -> None:
    spec = contract_client.get("/openapi.json").json()
    paths = spec["paths"]
    assert {
        f"{API}/predict",
        f"{API}/model/predict",
        f"{API}/model/dataset",
        "/v1/models/{name}:predict",
        "/v2/models/{name}/infer",
        "/v2/health/ready",
        "/metrics",
    } <= set(paths)
    schemas = spec["components"]["schemas"]
    record = next(v for k, v in schemas.items() if k.endswith("record") or v.get("title", "").endswith("record"))
    radius = record["properties"]["radius"]
    assert radius["description"] == "Mean radius of the cell nuclei. Unit: mm."
    assert radius["minimum"] == 0 and radius["maximum"] == 5000 and radius["examples"] == [pytest.approx(17.99)]
    assert record["additionalProperties"] is False and set(record["required"]) == set(models.FEATURES)
    request = schemas["PredictRequest"]
    assert request["examples"][0]["records"][0]["radius"] == pytest.approx(17.99)
    assert (
        "Labels: 0 = malignant, 1 = benign." in schemas["PredictResponse"]["properties"]["predictions"]["description"]
    )
    assert "ErrorBody" in schemas
    op = paths[f"{API}/predict"]["post"]
    assert op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "Breast cancer diagnosis" in spec["info"]["description"]
    assert spec["info"]["title"] == "Breast Cancer_Risk (version 4)"


def test_api_description_shows_run_params_metrics_tags() -> None:
    from custom_predictor.app import _description
    from custom_predictor.contract import Contract
    from custom_predictor.source import ModelSource

    src = ModelSource(
        uri="models:/m/2",
        model_dir=Path("."),
        mlmodel={},
        name="m",
        version="2",
        run_id="r1",
        run={"params": {"C": "1.0"}, "metrics": {"auc": 0.93}, "tags": {"team": "a|b"}},
    )
    text = _description(src, Contract.model_validate({"inputs": [{"name": "x", "type": "double"}]}), "sklearn")
    assert "**version** `2`" in text and "**run** `r1`" in text
    assert "| C | 1.0 |" in text and "| auc | 0.93 |" in text and "| team | a/b |" in text


def test_swagger_ui_is_served_offline(contract_client: Any) -> None:
    for page in (f"/{PATH}/api/", "/docs"):
        html = contract_client.get(page).text
        assert f"/{PATH}/api/static/swagger-ui-bundle.js" in html and "/openapi.json" in html
        assert "cdn" not in html.lower() and "https://" not in html.split("<script>")[0].replace(
            "https://fastapi.tiangolo.com", ""
        )
    js = contract_client.get(f"/{PATH}/api/static/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert contract_client.get(f"/{PATH}/api/static/swagger-ui.css").status_code == 200


def test_entity_lookup(contract_client: Any) -> None:
    r = contract_client.post(f"{API}/model/predict", json={"patient_id": 1001})
    assert r.status_code == 200, r.text
    body = r.json()
    x, _ = models.breast_cancer(2)
    row = dict(zip(models.FEATURES, map(float, x[1]), strict=True))
    assert body["patient_id"] == 1001 and body["features"] == row
    assert body["predictions"] == expected_for([row]) and body["labels"] == [models.LABELS[body["predictions"][0]]]
    assert body["version"] == "4"
    r = contract_client.post(f"{API}/model/predict", json={"patient_id": 5})
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    assert contract_client.post(f"{API}/model/predict", json={"patient_id": "1001"}).status_code == 422
    assert contract_client.post(f"{API}/model/predict", json={"patient": 1001}).status_code == 422
    page = contract_client.get(f"{API}/model/dataset", params={"limit": 5, "offset": 2}).json()
    assert page["total"] == 20 and [r["patient_id"] for r in page["rows"]] == [1002, 1003, 1004, 1005, 1006]
    assert contract_client.get(f"{API}/model/dataset", params={"limit": 0}).status_code == 422


def test_no_entity_routes_without_a_lookup(classifier: Any) -> None:
    assert classifier.post(f"{API}/model/predict", json={"patient_id": 1}).status_code == 404


def test_pyfunc_model(pyfunc: Any) -> None:
    assert pyfunc.app_state.runtime.kind == "pyfunc"
    r = pyfunc.post("/linear/api/v1/predict", json={"records": [{"a": 1.5, "b": 2, "name": "x"}]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [{"score": 5.0, "flag": True}]
    r = pyfunc.post("/linear/api/v1/predict", json={"records": [{"a": 1.5, "b": 2.5, "name": "x"}]})
    assert r.status_code == 422 and r.json()["details"][0]["loc"] == "records[0].b"
    v2 = pyfunc.post(
        "/v2/models/linear/infer",
        json={
            "inputs": [
                {"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0, 0.5]},
                {"name": "b", "shape": [2], "datatype": "INT64", "data": [1, 1]},
                {"name": "name", "shape": [2], "datatype": "BYTES", "data": ["x", "y"]},
            ]
        },
    ).json()
    assert v2["outputs"] == [
        {"name": "score", "shape": [2], "datatype": "FP64", "data": [3.0, 2.0]},
        {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, False]},
    ]


def test_whole_numbers_are_accepted_for_integers(pyfunc: Any, contract_client: Any) -> None:
    """JSON Schema's `integer` admits 2.0 (the same number as 2), so the routes take it as 2."""
    r = pyfunc.post("/linear/api/v1/predict", json={"records": [{"a": 1.5, "b": 2.0, "name": "x"}]})
    assert r.status_code == 200 and r.json()["predictions"] == [{"score": 5.0, "flag": True}], r.text
    r = pyfunc.post("/v1/models/linear:predict", json={"instances": [[1.5, 2.0, "x"], [1.5, "2", "x"]]})
    assert r.status_code == 422 and [d["loc"] for d in r.json()["details"]] == ["instances[1][1]"], r.text
    r = contract_client.post(f"{API}/model/predict", json={"patient_id": 1001.0})
    assert r.status_code == 200 and r.json()["patient_id"] == 1001, r.text


def test_model_raising_is_500_without_echo(pyfunc: Any) -> None:
    r = pyfunc.post("/linear/api/v1/predict", json={"records": [{"a": -5e6, "b": 1, "name": "secret-name"}]})
    assert r.status_code == 500
    assert r.json() == {"error": "model_error", "message": "the model raised RuntimeError", "details": []}
    assert "secret" not in r.text and "5000000" not in r.text
    assert pyfunc.post("/linear/api/v1/predict", json={"records": [{"a": 1.0, "b": 1, "name": "x"}]}).status_code == 200


def test_model_rejecting_input_is_422_without_echo(pyfunc: Any, classifier: Any) -> None:
    r = pyfunc.post("/linear/api/v1/predict", json={"records": [{"a": 5e12, "b": 1, "name": "secret-name"}]})
    assert r.status_code == 422
    assert r.json() == {
        "error": "model_rejected_input",
        "message": "the model rejected the input (ValueError)",
        "details": [],
    }
    # a finite value the contract allows but that overflows inside the scaler: scikit-learn raises ValueError
    r = classifier.post(f"{API}/predict", json={"records": [{**ROW, "smoothness": -1.7976931348623155e308}]})
    assert (r.status_code, r.json()["error"]) == (422, "model_rejected_input")


def _contract_model(tmp_path: Path, local_models: dict[str, Path], **changes: Any) -> Path:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(local_models["contract"], folder)
    data = copy.deepcopy(models.contract_dict())
    data["test_data"].update(changes)
    (folder / "contract.yaml").write_text(yaml.safe_dump(data))
    return folder


def test_self_test_failure_keeps_ready_false(tmp_path: Path, local_models: dict[str, Path]) -> None:
    wrong = [1 - v for v in models.contract_dict()["test_data"]["expected"]]
    with in_process(model_uri=str(_contract_model(tmp_path, local_models, expected=wrong))) as c:
        r = c.get("/v2/health/ready")
        assert r.status_code == 503
        assert r.json()["state"] == "failed"
        assert r.json()["reason"].startswith("self-test failed: test_data row 0: expected")
        assert c.get("/v2/health/live").status_code == 200
        assert c.get("/v2/models/model/ready").json() == {"name": "model", "ready": False}
        r = c.post("/model/api/v1/predict", json={"records": [ROW]})
        assert (r.status_code, r.json()["error"]) == (503, "not_ready")
        assert "predictor_model_ready 0.0" in c.get("/metrics").text


def test_unloadable_model_keeps_ready_false(tmp_path: Path, local_models: dict[str, Path]) -> None:
    folder = _contract_model(tmp_path, local_models)
    (folder / "model.skops").write_bytes(b"not a model")
    with in_process(model_uri=str(folder)) as c:
        body = c.get("/v2/health/ready").json()
        assert body["ready"] is False and body["reason"].startswith("model load failed:")


@pytest.mark.anyio
async def test_asgi_transport_and_readiness_before_load(local_models: dict[str, Path]) -> None:
    """httpx's own ASGI transport; before the lifespan has loaded the model, live is up and ready is not."""
    from custom_predictor.app import create_app
    from custom_predictor.settings import Settings

    app = create_app(Settings(model_uri=str(local_models["classifier"]), model_name="Breast Cancer_Risk"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/v2/health/live")).status_code == 200
        assert (await c.get("/v2/health/ready")).json() == {"ready": False, "state": "loading", "reason": None}
        async with app.router.lifespan_context(app):
            import asyncio

            assert await asyncio.to_thread(app.state.runtime.wait, 60)
            r = await c.post(f"{API}/predict", json={"records": [ROW]})
            assert r.status_code == 200 and r.json()["predictions"] == expected_for([ROW])


def test_optional_input_takes_its_default(tmp_path: Path, local_models: dict[str, Path]) -> None:
    folder = _contract_model(tmp_path, local_models)
    data = yaml.safe_load((folder / "contract.yaml").read_text())
    data["inputs"][4].update(required=False, default=0.1)
    (folder / "contract.yaml").write_text(yaml.safe_dump(data))
    with in_process(model_uri=str(folder)) as c:
        assert c.app_state.runtime.kind == "kernel"
        partial = {k: v for k, v in ROW.items() if k != "smoothness"}
        r = c.post("/model/api/v1/predict", json={"records": [partial]})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == expected_for([{**partial, "smoothness": 0.1}])
        spec = c.get("/openapi.json").json()["components"]["schemas"]
        record = next(v for v in spec.values() if v.get("title", "").endswith("record"))
        assert "smoothness" not in record["required"]


def test_probabilities_are_rows_of_a_2d_tensor(tmp_path: Path) -> None:
    folder = models.save_classifier(tmp_path / "proba", predict_fn="predict_proba")
    x, _ = models.breast_cancer(4)
    rows = [dict(zip(models.FEATURES, map(float, r), strict=True)) for r in x]
    import pandas as pd

    want = models._fit_classifier().predict_proba(pd.DataFrame(rows)).tolist()
    with in_process(model_uri=str(folder), service_path="proba") as c:
        assert c.app_state.runtime.kind == "kernel"
        got = c.post("/proba/api/v1/predict", json={"records": rows}).json()["predictions"]
        assert [len(p) for p in got] == [2] * 4 and got == [pytest.approx(p, rel=1e-9) for p in want]
        out = c.post(
            "/v2/models/proba/infer",
            json={
                "inputs": [
                    {
                        "name": "x",
                        "shape": [4, 5],
                        "datatype": "FP64",
                        "data": [[r[f] for f in models.FEATURES] for r in rows],
                    }
                ]
            },
        ).json()["outputs"]
        assert out == [{"name": "prediction", "shape": [4, 2], "datatype": "FP64", "data": [v for p in got for v in p]}]


def test_prediction_calls_before_ready_are_turned_away_without_parsing(local_models: dict[str, Path]) -> None:
    from starlette.testclient import TestClient

    from custom_predictor.app import create_app
    from custom_predictor.settings import Settings

    app = create_app(Settings(model_uri=str(local_models["classifier"]), service_path="m"))
    client = TestClient(app)  # no lifespan: the model never loads
    for path, code in (
        ("/m/api/v1/predict", lambda b: b["error"]),
        ("/v1/models/m:predict", lambda b: b["code"]),
        ("/v2/models/m/infer", lambda b: b["code"]),
        ("/v2/models/m/versions/1/infer", lambda b: b["code"]),
        ("/invocations", lambda b: b["error_code"]),
    ):
        r = client.post(path, content=b"not even json", headers={"content-type": "application/json"})
        assert r.status_code == 503 and code(r.json()) in ("not_ready", "TEMPORARILY_UNAVAILABLE"), path
    assert client.get("/v2/health/live").status_code == 200
    assert client.post("/v1/models/other:predict", json={"instances": [ROW]}).status_code == 404
