"""`make demo` as a user runs it: a real process (MLflow, two models, service-builder, predictors), no cluster.

One demo runs for the module on a free port with a temporary state dir. The tests read what it prints (Swagger
URLs, curl examples) and use it as a person would, then stop it with SIGINT and look for leftover processes. A
second run through `make demo` reuses the registered models. The port-taken case needs no MLflow at all.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port, mlflow_server

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "scripts" / "demo.py"
VENV = Path(sys.executable).parent.parent  # the venv pytest runs in (not resolved: a venv python is a symlink)
READY_TIMEOUT = 240

pytestmark = pytest.mark.timeout(900)


def demo_env(state: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEMO_", "MLFLOW_TRACKING"))}
    env.update(
        DEMO_STATE_DIR=str(state),
        DEMO_MLFLOW_PORT=str(port),
        DEMO_TIMEOUT=str(READY_TIMEOUT),
        MLFLOW_DISABLE_TELEMETRY="true",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def processes_of(state: Path, *, but: int = 0) -> list[str]:
    """Live processes started for this state dir (named in their command line or inherited in their environment),
    other than pid `but`."""
    needle = str(state).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in (os.getpid(), but):
            continue
        try:
            if (proc / "stat").read_text().split()[2] == "Z":
                continue
            cmdline = (proc / "cmdline").read_bytes()
            if needle in cmdline or needle in (proc / "environ").read_bytes():
                words = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name}: {words[:200]}")
        except (OSError, IndexError):
            continue
    return found


class Demo:
    """A running `scripts/demo.py` whose output is collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str], state: Path) -> None:
        self.state = state
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.ready_seconds: float | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.output):
                return
            if self.proc.poll() is not None:
                self._reader.join(5)
                if predicate(self.output):
                    return
                raise AssertionError(f"demo exited with {self.proc.returncode} first:\n{self.output}")
            time.sleep(0.2)
        raise AssertionError(f"demo output did not get there in {timeout}s:\n{self.output}")

    def wait(self, timeout: float) -> int:
        """Wait for the process to end by itself; kill it if it does not."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"still running after {timeout}s:\n{self.output}") from None
        self._reader.join(10)
        return self.proc.returncode

    def stop(self, sig: int = signal.SIGINT, timeout: float = 90) -> int:
        """Send `sig` (once) and wait for the exit code; kill the process if it does not stop."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"demo did not stop within {timeout}s:\n{self.output}") from None
        self._reader.join(10)
        return self.proc.returncode


def printed(output: str, label: str) -> list[str]:
    """The values printed after `label` (e.g. every 'Swagger UI:' URL)."""
    return re.findall(rf"{re.escape(label)}\s+(\S+)", output)


def curl_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip().startswith("curl ")]


def call(curl: str) -> Any:
    """Do what a printed curl example does, with urllib: method, URL, headers and body from its words."""
    words = shlex.split(curl)
    assert words[:2] == ["curl", "-s"], curl
    url, method, headers, body = "", "GET", {}, None
    i = 2
    while i < len(words):
        if words[i] == "-X":
            method, i = words[i + 1], i + 2
        elif words[i] == "-H":
            key, _, value = words[i + 1].partition(":")
            headers[key.strip()] = value.strip()
            i += 2
        elif words[i] == "-d":
            body, i = words[i + 1].encode(), i + 2
        else:
            url, i = words[i], i + 1
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=15) as r:
        assert r.status == 200
        return json.loads(r.read())


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=15) as r:
        return r.status, r.read().decode()


def version_tags(mlflow_url: str, name: str, version: str) -> dict[str, str]:
    status, text = get(f"{mlflow_url}/api/2.0/mlflow/model-versions/get?name={name}&version={version}")
    assert status == 200
    return {t["key"]: t["value"] for t in json.loads(text)["model_version"].get("tags", [])}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-state")


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def demo(state: Path, port: int) -> Iterator[Demo]:
    """The demo, started and waited for until it has printed everything and waits for Ctrl-C."""
    d = Demo([sys.executable, str(DEMO)], demo_env(state, port), state)
    try:
        d.wait_for(lambda out: "Press Ctrl-C" in out, timeout=READY_TIMEOUT + 180)
        d.ready_seconds = time.monotonic() - d.started
        print(f"\ndemo: both models ready and printed {d.ready_seconds:.1f}s after start")
        yield d
    finally:
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGINT)
            try:
                d.proc.wait(60)
            except subprocess.TimeoutExpired:
                d.proc.kill()


def test_both_models_ready_with_tags_and_swagger(demo: Demo, port: int) -> None:
    out = demo.output
    assert re.search(r"demo-diabetes-risk v1: ready", out), out
    assert re.search(r"demo-iris-species v1: ready", out), out
    assert "registered, marked by alias production" in out and "registered, marked by tag stage=production" in out
    mlflow_url = f"http://127.0.0.1:{port}"
    ui = printed(out, "(the written-back deployment.* tags are on each version):")
    assert ui == [f"{mlflow_url}/#/models"]
    assert get(ui[0])[0] == 200
    swaggers = printed(out, "Swagger UI:")
    assert len(swaggers) == 2
    for name, swagger in zip(("demo-diabetes-risk", "demo-iris-species"), swaggers, strict=True):
        tags = version_tags(mlflow_url, name, "1")
        assert tags["deployment.status"] == "ready" and tags["deployed"] == "true"
        assert tags["model_endpoint"] == swagger
        assert swagger == f"{tags['deployment.url']}/{name}/api/"
        status, page = get(swagger)
        assert status == 200 and "swagger-ui" in page.lower()


def test_curl_examples_answer(demo: Demo) -> None:
    risk_predict, lookup, iris_predict = curl_lines(demo.output)
    (key,) = re.findall(r"API key of the predictors \(shown once.*\): (sbk_\S+)", demo.output)
    assert demo.output.count(key) == 1 + 3  # the line that shows it, and the curl examples that use it
    without = risk_predict.replace(f"-H 'Authorization: Bearer {key}' ", "")
    with pytest.raises(urllib.error.HTTPError) as refused:
        call(without)
    assert refused.value.code == 401  # the patient data needs the key
    risk = call(risk_predict)
    assert risk["model"] == "demo-diabetes-risk" and risk["predictions"][0] in (0, 1)
    assert risk["labels"][0] in ("lower risk", "higher risk")
    patient = call(lookup)
    assert patient["patient_id"] == 1001
    record = json.loads(shlex.split(risk_predict)[-1])["records"][0]
    assert patient["features"] == record  # the predict example is this patient's record
    assert patient["predictions"] == risk["predictions"]
    iris = call(iris_predict)
    assert iris["predictions"] == ["versicolor"]
    if shutil.which("curl"):  # and the very lines, through a shell, as a person pastes them
        for line, expected in ((risk_predict, risk), (lookup, patient), (iris_predict, iris)):
            done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30, check=True)
            assert json.loads(done.stdout) == expected


def test_sigint_stops_everything(demo: Demo, state: Path) -> None:
    services = list((state / "service-builder" / "services").glob("*.json"))
    assert len(services) == 2
    running = processes_of(state, but=demo.proc.pid)
    assert len(running) >= 4, running  # MLflow, the adapter, two predictors
    assert demo.stop(signal.SIGINT) == 0, demo.output
    assert "Stopped." in demo.output
    deadline = time.monotonic() + 10
    while processes_of(state) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(state) == []


def test_make_demo_again_reuses_the_models(demo: Demo, state: Path, port: int) -> None:
    """`make demo` a second time on the same state: nothing registered again, ready again, exits when asked."""
    assert demo.stop(signal.SIGINT) == 0
    venv = str(VENV)
    make = ["make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/.installed", "demo"]
    again = Demo(make, demo_env(state, port, DEMO_EXIT_WHEN_READY="1"), state)
    code = again.wait(READY_TIMEOUT + 180)
    out = again.output
    assert code == 0, out
    assert f"{venv}/bin/python scripts/demo.py" in out  # the Makefile's command
    assert "demo-diabetes-risk v1: reused, marked by alias production" in out, out
    assert "demo-iris-species v1: reused, marked by tag stage=production" in out, out
    assert "registered," not in out
    assert "Both models ready" in out and len(curl_lines(out)) == 3
    assert processes_of(state) == []


def register_broken_risk_version(state: Path, port: int) -> str:
    """Through a plain MLflow server on the demo's store: a new risk version whose contract.yaml is invalid, aliased."""
    sys.path.insert(0, str(REPO / "scripts"))
    import demo_models
    import mlflow
    import mlflow.sklearn
    import yaml
    from mlflow import MlflowClient

    with mlflow_server(state, port) as server:
        client = MlflowClient(server.url, registry_uri=server.url)
        model, x_train, _ = demo_models.train_risk()
        contract = {**demo_models.risk_contract(model, x_train), "version": 2}
        folder = state.parent / "broken-model"
        mlflow.sklearn.save_model(model, str(folder), pip_requirements=demo_models.requirements())
        (folder / "contract.yaml").write_text(yaml.safe_dump(contract))
        demo_models.write_patients(folder / "patients.csv")
        run = client.create_run(client.get_experiment_by_name(demo_models.EXPERIMENT).experiment_id)
        client.log_artifacts(run.info.run_id, str(folder), artifact_path="model")
        client.set_terminated(run.info.run_id)
        mlflow.set_tracking_uri(server.url)
        mlflow.set_registry_uri(server.url)
        version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", demo_models.RISK_MODEL).version)
        client.set_registered_model_alias(demo_models.RISK_MODEL, "production", version)
    return version


def test_a_broken_model_is_reported(demo: Demo, state: Path, port: int) -> None:
    """Someone moved the alias to a version with an invalid contract: the demo prints its deployment.message."""
    assert demo.stop(signal.SIGINT) == 0
    version = register_broken_risk_version(state, port)
    done = subprocess.run(
        [sys.executable, str(DEMO)], env=demo_env(state, port), capture_output=True, text=True, timeout=400
    )
    text = f"exit code {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 1, text
    assert f"demo-diabetes-risk v{version}: reused, marked by alias production" in done.stdout, text
    assert f"demo: demo-diabetes-risk v{version} failed: " in done.stderr, text
    assert "predictor exited with code 2" in done.stderr, text
    assert re.search(r"\n    custom_predictor: invalid contract: .*contract.yaml: version: ", done.stderr), text
    assert "Traceback" not in done.stderr, text
    assert processes_of(state) == []


def test_ctrl_c_while_starting_stops_cleanly(tmp_path: Path) -> None:
    """Ctrl-C while MLflow is still starting: everything started so far stops; the exit code says 'interrupted'."""
    state = tmp_path / "state"
    early = Demo([sys.executable, str(DEMO)], demo_env(state, free_port()), state)
    early.wait_for(lambda out: "[1/3] MLflow server" in out, timeout=60)
    deadline = time.monotonic() + 10
    while not processes_of(state, but=early.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(state, but=early.proc.pid), "the MLflow server should be starting"
    assert early.stop(signal.SIGINT, timeout=60) == 130, early.output
    assert "SIGINT received." in early.output and "Stopped (exit code 130)." in early.output
    assert "Traceback" not in early.output
    assert processes_of(state) == []


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, str(DEMO)],
            env=demo_env(tmp_path / "state", taken),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done
    assert f"port {taken} on 127.0.0.1 is already in use" in done.stderr
    assert f"DEMO_MLFLOW_PORT={taken + 1} make demo" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert processes_of(tmp_path / "state") == []
