"""tests/tiers.py: what a test needs is read from what it uses, the guard stops a `fast` test that starts a server,
and a missing optional part is a skip with its reason, or a stop in CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import tiers
from tests.predictor import procs
from tests.predictor.conftest import run_predictor, run_to_exit
from tests.servers import mlflow_server

# What these helpers do never runs: the scanner reads their code.


def calls_run_predictor(tmp_path: Path) -> None:
    with run_predictor(tmp_path, MODEL_URI="x"):
        pass


def calls_a_module_attribute(tmp_path: Path) -> None:
    with procs.running_predictor("x", None, "m", tmp_path):
        pass


def runs_the_predictor_in_a_shell(tmp_path: Path) -> None:
    subprocess.Popen(["sh", "-c", 'echo $$ > cgroup.procs && exec "$0" -m custom_predictor', sys.executable])


def imports_torch_in_its_body() -> None:
    import torch

    torch.zeros(1)


def saves_a_model(path: Path) -> None:
    import mlflow

    mlflow.sklearn.save_model(object(), str(path))


def fits_a_model() -> None:
    from sklearn.linear_model import LinearRegression

    LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])


def through_a_helper(tmp_path: Path) -> None:
    calls_run_predictor(tmp_path)
    saves_a_model(tmp_path)


def starts_mlflow(tmp_path: Path) -> None:
    with mlflow_server(tmp_path):
        pass


def nested_in_a_lambda() -> Any:
    return lambda: run_to_exit(MODEL_URI="x")


def needs_nothing(tmp_path: Path) -> int:
    return len(str(tmp_path))


@pytest.mark.parametrize(  # by name: a function given as a parameter would count as used by the test
    ("function", "needs"),
    [
        ("calls_run_predictor", {"predictor"}),
        ("calls_a_module_attribute", {"predictor"}),
        ("runs_the_predictor_in_a_shell", {"predictor"}),
        ("imports_torch_in_its_body", {"torch"}),
        ("saves_a_model", {"model"}),
        ("fits_a_model", {"model"}),
        ("through_a_helper", {"predictor", "model"}),
        ("starts_mlflow", {"mlflow"}),
        ("nested_in_a_lambda", {"predictor"}),
        ("needs_nothing", set()),
    ],
)
def test_needs_are_read_from_the_code_a_test_runs(
    function: str, needs: set[str], request: pytest.FixtureRequest
) -> None:
    assert tiers.Scanner().of_value(globals()[function]) == needs
    assert request.node.get_closest_marker(tiers.FAST) is not None  # naming them is not using them


def test_fixtures_count_with_what_they_use(mlflow_srv: Any, request: pytest.FixtureRequest) -> None:
    """`mlflow_srv` calls `mlflow_server`; `tracking_uri` would count too, through `mlflow_srv`."""
    assert request.node.get_closest_marker("mlflow") is not None
    assert request.node.get_closest_marker(tiers.FAST) is None


def test_the_guard_stops_a_fast_test_that_starts_a_predictor(request: pytest.FixtureRequest) -> None:
    """The module name is built at run time, so the scanner cannot see it: the case the guard is there for."""
    assert request.node.get_closest_marker(tiers.FAST) is not None
    module = "_".join(["custom", "predictor"])
    with pytest.raises(RuntimeError, match=r"is marked `fast` but starts a `python -m custom_predictor` process"):
        subprocess.Popen([sys.executable, "-m", module, "--help"])


def test_the_guard_leaves_teardowns_alone(request: pytest.FixtureRequest) -> None:
    """A test's teardown also ends the fixtures of wider scope the next test does not share (after the last test,
    the session's: the images' fixture runs podman then), which is no start of anything by this test."""
    assert request.node.get_closest_marker(tiers.FAST) is not None
    module = "_".join(["custom", "predictor"])
    request.addfinalizer(lambda: subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True))


@pytest.mark.parametrize(  # command lines as one string: as a list they would count as run by the test
    ("line", "need"),
    [
        ("python -m custom_predictor", "predictor"),
        ("python -m mlflow server --port 5000", "mlflow"),
        ("/root/.cache/service-builder/controlplane/kube-v1/kube-apiserver --etcd-servers=x", "controlplane"),
        ("/usr/bin/chromium --headless", "browser"),
        ("podman run --rm kind.local/service-builder-predictor:dev", "images"),
        ("/root/.cache/service-builder/controlplane/node-v1/kubelet --config=x", "cluster"),
        ("python -m custom_predictor.auth keygen", None),
        ("bash scripts/e2e.sh up", None),
    ],
)
def test_the_guard_knows_a_tiers_processes_by_their_command_line(line: str, need: str | None) -> None:
    assert tiers.started(None, line.split()) == need


def test_the_guard_reads_a_shell_script_the_process_runs() -> None:
    script = " ".join(['exec "$0"', "-m", "_".join(["custom", "predictor"])])
    assert tiers.started(None, ["sh", "-c", script, sys.executable]) == "predictor"


class Item:
    def __init__(self, *marks: str) -> None:
        self.marks = [getattr(pytest.mark, m).mark for m in marks]

    def get_closest_marker(self, name: str) -> Any:
        return next((m for m in self.marks if m.name == name), None)

    def add_marker(self, marker: Any) -> None:
        self.marks.append(marker.mark)


def test_a_missing_optional_part_is_a_skip_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiers, "missing", lambda: {"torch": "torch is not installed: `make install`"})
    monkeypatch.delenv("CI", raising=False)
    torch, fast = Item("torch"), Item(tiers.FAST)
    tiers.skip_or_fail_missing([torch, fast])  # type: ignore[list-item]
    assert torch.get_closest_marker("skip").kwargs == {"reason": "needs torch: torch is not installed: `make install`"}
    assert fast.get_closest_marker("skip") is None


@pytest.mark.parametrize("ci", ["1", "true"])
def test_in_ci_a_missing_optional_part_stops_the_run(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setattr(tiers, "missing", lambda: {"browser": "/usr/bin/chromium is missing"})
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.UsageError, match="1 tests need browser: /usr/bin/chromium is missing"):
        tiers.skip_or_fail_missing([Item("browser"), Item(tiers.FAST)])  # type: ignore[list-item]
    tiers.skip_or_fail_missing([Item(tiers.FAST)])  # type: ignore[list-item]  # nothing selected needs it


def test_a_helper_that_is_gone_stops_the_run_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tiers.HELPERS, "tests.servers.no_such_helper", ("mlflow",))
    with pytest.raises(pytest.UsageError, match=r"HELPERS names tests\.servers\.no_such_helper, which is gone"):
        tiers.Scanner()
