"""Every served model's OpenAPI document is valid (openapi-spec-validator), and every example it shows (what
Swagger UI's 'Try it out' sends) is answered 200 by its own route: for every flavor and every signature shape
(tensors, optional columns, contract models, column names that are no identifiers, models logged without
signature, untyped models)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from openapi_spec_validator import validate

from tests.predictor import flavors
from tests.predictor.conftest import in_process

MODELS = {**flavors.SAVERS, **flavors.SHAPES}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("openapi")
    return {name: save(root / name) for name, save in MODELS.items()}


def examples(spec: dict[str, Any]) -> Iterator[tuple[str, str, str, Any]]:
    """(method, path, media type, body) of every request example the document shows, path parameters filled in
    with their own documented examples."""
    for template, item in spec["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody")
            if not body:
                continue
            path = template
            for param in operation.get("parameters", []):
                if param["in"] == "path":
                    (value,) = [e["value"] for e in param["examples"].values()]
                    path = path.replace("{" + param["name"] + "}", str(value))
            for media, entry in body["content"].items():
                shown = [entry["example"]] if "example" in entry else []
                shown += [e["value"] for e in entry.get("examples", {}).values()]
                for value in shown:
                    yield method.upper(), path, media, value


@pytest.mark.parametrize("name", list(MODELS))
def test_the_document_is_valid_and_its_examples_are_answered(folders: dict[str, Path], name: str) -> None:
    with in_process(model_uri=str(folders[name]), service_path="m") as client:
        runtime = client.app_state.runtime
        assert runtime.ready, runtime.reason
        spec = client.get("/openapi.json").json()
        validate(spec)
        shown = list(examples(spec))
        paths = {path for _, path, _, _ in shown}
        assert "/invocations" in paths and "/m/api/v1/predict" in paths, paths
        if runtime.contract.inputs:
            assert {"/v1/models/m:predict", "/v2/models/m/infer"} <= paths, paths
        for method, path, media, value in shown:
            content = value.encode() if isinstance(value, str) else orjson.dumps(value)
            r = client.request(method, path, content=content, headers={"content-type": media})
            assert r.status_code == 200, (path, media, value, r.text)
