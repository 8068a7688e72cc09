"""One gate on every data route: with API keys required, no prediction and no patient record without the key, on
every protocol and path variant, each refusal in its protocol's shape; probes, metadata and the docs stay open and
say nothing beyond the model's name and version; a route walk fails for any data route added without the gate.
The real predictor app in-process, a real keys file written by `keygen`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.routing import iter_route_contexts

from custom_predictor.access import guarded
from custom_predictor.auth.apikeys import generate
from tests.predictor import models
from tests.predictor.conftest import ROW, in_process

OPEN = {
    ("GET", "/"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{name}"),
    ("GET", "/v2"),
    ("GET", "/v2/models/{name}"),
    ("GET", "/v2/models/{name}/ready"),
    ("GET", "/v2/models/{name}/versions/{version}"),
    ("GET", "/v2/models/{name}/versions/{version}/ready"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/healthz"),
    ("GET", "/ping"),
    ("GET", "/health"),
    ("GET", "/version"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/m/api/"),
}
"""The routes without the gate: probes, metadata, metrics and the docs (settings can gate the last two)."""


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, local_models: dict[str, Path]) -> Iterator[tuple[Any, str]]:
    root = tmp_path_factory.mktemp("gate")
    key, line = generate("tests")
    (root / "keys").write_text(line + "\n")
    settings = {"auth_modes": "apikey", "auth_api_keys_file": str(root / "keys")}
    with in_process(model_uri=str(local_models["contract"]), service_path="m", **settings) as client:
        yield client, key


def test_every_route_but_the_open_ones_carries_the_gate(keyed: tuple[Any, str]) -> None:
    client, _ = keyed
    routes = [r for r in iter_route_contexts(client.fastapi.routes) if r.methods]
    data = {(m, r.path) for r in routes for m in r.methods if (m, r.path) not in OPEN}
    assert {
        ("POST", "/m/api/v1/predict"),
        ("POST", "/m/api/v1/model/predict"),
        ("GET", "/m/api/v1/model/dataset"),
    } <= data
    unguarded = sorted((m, r.path) for r in routes for m in r.methods if (m, r.path) not in OPEN and not guarded(r))
    assert unguarded == []


REQUESTS = {
    "typed": ("POST", "/m/api/v1/predict", {"records": [ROW]}, lambda b: b["error"]),
    "entity lookup": ("POST", "/m/api/v1/model/predict", {"patient_id": 1001}, lambda b: b["error"]),
    "dataset": ("GET", "/m/api/v1/model/dataset", None, lambda b: b["error"]),
    "kserve v1": ("POST", "/v1/models/m:predict", {"instances": [ROW]}, lambda b: b["code"]),
    "v2": ("POST", "/v2/models/m/infer", {"inputs": []}, lambda b: b["code"]),
    "v2 versioned": ("POST", "/v2/models/m/versions/1/infer", {"inputs": []}, lambda b: b["code"]),
    "mlflow": ("POST", "/invocations", {"dataframe_records": [ROW]}, lambda b: b["error_code"]),
}


@pytest.mark.parametrize("name", list(REQUESTS))
@pytest.mark.parametrize("credential", [None, "sbk_wrong", "Bearer not-a-key", "Basic dXNlcjpwYXNz"])
def test_no_data_without_a_valid_key(keyed: tuple[Any, str], name: str, credential: str | None) -> None:
    client, _ = keyed
    method, path, body, code = REQUESTS[name]
    headers = (
        {} if credential is None else {"X-API-Key" if credential.startswith("sbk") else "Authorization": credential}
    )
    for variant in (path, path.replace("/m/", "/%6D/", 1) if "/m/" in path else path):
        r = client.request(method, variant, content=None if body is None else orjson.dumps(body), headers=headers)
        assert r.status_code == 401, (variant, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert code(r.json()) in ("unauthenticated", "UNAUTHENTICATED"), r.text
        assert "1001" not in r.text and "radius" not in r.text  # no data, no echo
    r = client.request(method, path + "/", content=None if body is None else orjson.dumps(body), headers=headers)
    assert r.status_code in (401, 404, 405) or (r.status_code in (307, 308) and "radius" not in r.text), r.text


@pytest.mark.parametrize("name", list(REQUESTS))
def test_the_key_opens_every_data_route(keyed: tuple[Any, str], name: str) -> None:
    client, key = keyed
    method, path, body, _ = REQUESTS[name]
    if name.startswith("v2"):
        body = {"inputs": [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in ROW.items()]}
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        r = client.request(method, path, content=None if body is None else orjson.dumps(body), headers=headers)
        assert r.status_code == 200, r.text


def test_probes_and_docs_stay_open_and_declare_the_schemes(keyed: tuple[Any, str]) -> None:
    client, _ = keyed
    for path in ("/v2/health/live", "/v2/health/ready", "/", "/v1/models/m", "/v2/models/m", "/ping", "/metrics"):
        assert client.get(path).status_code == 200, path
    spec = client.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert spec["paths"]["/m/api/v1/predict"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in spec["paths"]["/v2/health/ready"]["get"]
    assert client.get("/m/api/").status_code == 200
    assert models.FEATURES[0] in client.get("/openapi.json").text  # the docs hold the names, not the data
