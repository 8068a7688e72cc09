"""Browser tests: Debian chromium, driven by playwright, against a real predictor process.

The Swagger page at /<path>/api/ (and /docs) must render the operations with assets served by the predictor
itself (no CDN), and "Try it out" then "Execute" on every prediction operation, with the body and parameters
Swagger UI fills in from the document's examples, must answer 200. The model has a contract with an entity
lookup, so every kind of operation is there. Chromium is installed by .ci/install-browser; without it these tests
are skipped saying so, and in CI (CI=1) the run stops (tests/tiers.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Response, sync_playwright

from tests.predictor.procs import Predictor, running_predictor
from tests.servers import MlflowServer

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MODEL_NAME = "Swagger Browser_Check"
PATH = "swagger-browser-check"


@pytest.fixture(scope="module")
def predictor(mlflow_srv: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Predictor]:
    import mlflow

    from tests.predictor.models import log_contract_model

    mlflow.set_tracking_uri(mlflow_srv.url)
    mlflow.set_registry_uri(mlflow_srv.url)
    uri = log_contract_model(MODEL_NAME)
    with running_predictor(uri, mlflow_srv.url, PATH, tmp_path_factory.mktemp("browser")) as p:
        yield p


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run .ci/install-browser (apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield b
        b.close()


class Page:
    """One page plus every request it made and every failed request or error status it saw."""

    def __init__(self, browser: Browser) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 1400})
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.problems: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.problems.append(f"failed {r.url}: {r.failure}"))
        self.page.on("response", self._check_status)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

    def _check_status(self, response: Response) -> None:
        if response.status >= 400:
            self.problems.append(f"{response.status} {response.url}")

    def off_host(self) -> list[str]:
        """Requests that left 127.0.0.1 (inline data: and blob: URLs are not requests to anyone)."""
        return [
            u
            for u in self.requests
            if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).hostname != "127.0.0.1"
        ]


@pytest.mark.parametrize("route", [f"/{PATH}/api/", "/docs"])
def test_swagger_page_renders_offline(predictor: Predictor, browser: Browser, route: str, tmp_path: Path) -> None:
    page = Page(browser)
    page.page.goto(predictor.url + route, wait_until="networkidle")
    page.page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    paths = page.page.locator(".opblock-summary-path").evaluate_all("els => els.map(e => e.dataset.path)")
    assert f"/{PATH}/api/v1/predict" in paths
    assert "/v1/models/{name}:predict" in paths or f"/v1/models/{PATH}:predict" in paths
    assert any(p.startswith("/v2/") for p in paths)
    assert MODEL_NAME in page.page.locator(".info .title").inner_text()
    page.page.screenshot(path=str(tmp_path / "swagger.png"), full_page=True)
    assert page.off_host() == []
    assert page.problems == []
    assert any(u.endswith(".js") for u in page.requests), "Swagger UI script was not loaded from the predictor"
    page.context.close()


PREDICTIONS = [
    ("predict", "predict", f"/{PATH}/api/v1/predict"),
    ("predict", "predict_entity", f"/{PATH}/api/v1/model/predict"),
    ("kserve", "v1_predict", f"/v1/models/{PATH}:predict"),
    ("kserve", "v2_infer", f"/v2/models/{PATH}/infer"),
    ("kserve", "v2_infer_version", f"/v2/models/{PATH}/versions/1/infer"),
    ("mlflow", "mlflow_invocations", "/invocations"),
]
"""Every prediction operation: (tag, operationId, the URL its filled-in example calls)."""


@pytest.mark.parametrize(("tag", "operation", "url"), PREDICTIONS, ids=[p[1] for p in PREDICTIONS])
def test_try_it_out_and_execute_answer_200(
    predictor: Predictor, browser: Browser, tmp_path: Path, tag: str, operation: str, url: str
) -> None:
    page = Page(browser)
    page.page.goto(f"{predictor.api}/", wait_until="networkidle")
    block = page.page.locator(f"#operations-{tag}-{operation}")
    block.locator(".opblock-summary").click()
    block.locator("button.try-out__btn").click()
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table tr.response .response-col_status").first
    status.wait_for(timeout=20_000)
    answer = block.locator(".live-responses-table tr.response .response-col_description pre").first.inner_text()
    page.page.screenshot(path=str(tmp_path / f"{operation}.png"), full_page=True)
    assert status.inner_text().strip() == "200", answer
    body = json.loads(answer)
    assert body.get("predictions") or body.get("outputs"), body
    if operation.startswith("predict"):
        assert body["model"] == MODEL_NAME and body["labels"][0] in ("malignant", "benign")
    assert any(u.endswith(url) for u in page.requests), page.requests
    assert page.off_host() == []
    assert page.problems == []
    page.context.close()


FLAVOR_PAGES = [
    "xgboost",
    "lightgbm",
    "pytorch-float32",
    "pytorch-dpm360",
    "sklearn-column-transformer",
    "odd-names",
    "unsigned-sklearn",
]


@pytest.fixture(scope="module")
def flavor_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.predictor import flavors

    root = tmp_path_factory.mktemp("flavor-pages")
    savers = {**flavors.SAVERS, **flavors.SHAPES}
    return {name: savers[name](root / name) for name in FLAVOR_PAGES}


@pytest.mark.parametrize("name", FLAVOR_PAGES)
def test_try_it_out_predicts_for_each_flavor(
    name: str, flavor_folders: dict[str, Path], browser: Browser, tmp_path: Path
) -> None:
    """Swagger UI on a real predictor process per flavor: the example the page fills in predicts with 200 (the
    DPM360-style model by its patient_id lookup)."""
    route = "/m/api/v1/model/predict" if name == "pytorch-dpm360" else "/m/api/v1/predict"
    with running_predictor(str(flavor_folders[name]), None, "m", tmp_path, SERVICE_PATH="m") as p:
        page = Page(browser)
        page.page.goto(f"{p.api}/", wait_until="networkidle")
        page.page.locator(f'.opblock-summary-path[data-path="{route}"]').click()
        block = page.page.locator(".opblock.is-open")
        block.locator("button.try-out__btn").click()
        body = block.locator("textarea.body-param__text")
        if name == "pytorch-dpm360":
            body.fill(json.dumps({"patient_id": 1002}))
        if name == "odd-names":  # the real column names, as the model was trained with them
            from tests.predictor.flavors import ODD_NAMES

            assert set(json.loads(body.input_value())["records"][0]) == set(ODD_NAMES)
        block.locator("button.execute").click()
        status = block.locator(".live-responses-table tr.response .response-col_status").first
        status.wait_for(timeout=20_000)
        assert status.inner_text().strip() == "200"
        answer = json.loads(
            block.locator(".live-responses-table tr.response .response-col_description pre").first.inner_text()
        )
        assert len(answer["predictions"]) >= 1
        page.page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        assert page.off_host() == [] and page.problems == []
        page.context.close()


@pytest.fixture(scope="module")
def protected(mlflow_srv: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Predictor, str]]:
    """The contract model behind API keys (a keys file written by `keygen`)."""
    import mlflow

    from custom_predictor.auth.apikeys import generate
    from tests.predictor.models import log_contract_model

    mlflow.set_tracking_uri(mlflow_srv.url)
    mlflow.set_registry_uri(mlflow_srv.url)
    root = tmp_path_factory.mktemp("protected")
    key, line = generate("swagger")
    (root / "keys").write_text(line + "\n")
    uri = log_contract_model(f"{MODEL_NAME} Protected")
    env = {"AUTH_MODES": "apikey", "AUTH_API_KEYS_FILE": str(root / "keys")}
    with running_predictor(uri, mlflow_srv.url, PATH, root, SERVICE_PATH=PATH, **env) as p:
        yield p, key


def execute(block: Any) -> tuple[str, str]:
    """Execute the operation open in `block` (Try it out already on); the status and body the page shows."""
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table tr.response .response-col_status").first
    status.wait_for(timeout=20_000)
    answer = block.locator(".live-responses-table tr.response .response-col_description pre").first.inner_text()
    return status.inner_text().strip(), answer


@pytest.mark.parametrize(("tag", "operation", "url"), PREDICTIONS, ids=[p[1] for p in PREDICTIONS])
@pytest.mark.parametrize("scheme", ["apiKey", "bearer"])
def test_authorize_with_a_key_then_try_it_out_answers_200(
    protected: tuple[Predictor, str], browser: Browser, tmp_path: Path, tag: str, operation: str, url: str, scheme: str
) -> None:
    """Behind auth the page and its document still load without a credential; Execute answers 401 until the key
    is given in Swagger UI's Authorize dialog (as X-API-Key or as a bearer token), then 200."""
    predictor, key = protected
    page = Page(browser)
    page.page.goto(f"{predictor.api}/", wait_until="networkidle")
    block = page.page.locator(f"#operations-{tag}-{operation}")
    block.locator(".opblock-summary").click()
    block.locator("button.try-out__btn").click()
    assert execute(block)[0] == "401"
    page.page.locator("button.authorize").first.click()
    heading = {"apiKey": "apiKey (apiKey)", "bearer": "bearer (http, Bearer)"}[scheme]
    dialog = page.page.locator(".auth-container form").filter(has_text=heading)
    dialog.locator("input").first.fill(key)
    dialog.locator("button.authorize").click()
    page.page.locator("button.btn-done").first.click()
    block.locator("button.btn-clear").click()  # the 401 shown before: gone, so the next answer is the new one
    status, answer = execute(block)
    page.page.screenshot(path=str(tmp_path / f"{operation}-{scheme}.png"), full_page=True)
    assert status == "200", answer
    assert any(u.endswith(url) for u in page.requests), page.requests
    assert [p for p in page.problems if not p.startswith("401 ")] == [] and page.off_host() == []
    page.context.close()
