"""Test tiers: what each test needs, found from what it uses and applied as markers (tests/conftest.py's hooks).

A test needs a resource when a fixture it uses (directly or through other fixtures), a parameter it is given, or
its own code calls a helper that makes one, followed through the functions of tests/ they call:

  mlflow        a real `mlflow server` (tests.servers)
  controlplane  etcd, kube-apiserver and the KServe manager, their kubectl, or Go (`make controlplane`)
  objectstore   SeaweedFS, the S3-compatible server (`make controlplane`)
  predictor     a `python -m custom_predictor` process
  model         real models trained or saved with MLflow in the test (`fit`, `save_model`, `log_model`)
  images        the project's images, built with docker or podman (tests/images)
  cluster       a real node (kubelet, containerd, runc, CNI) and Knative Serving here (tests/cluster)
  browser       Chromium driven by Playwright (.ci/install-browser)
  torch         PyTorch (`make install` links a cached copy into the venv)

A test that needs none of them is marked `fast`: `make test-fast` runs those (`pytest -m fast`). Nobody marks a
test by hand. A helper that makes a resource is known here (HELPERS, by name) or recognised by what its code runs
(`-m custom_predictor`, `mlflow server`, `go`) or imports (torch, playwright). As a check on all that, a `fast`
test that starts such a process fails at once, naming what it started (`guard`).

A missing optional part (torch, Chromium) is a failure in CI (CI set, as .ci/run does) and a skip saying what to
install anywhere else; the `images` and `cluster` fixtures do the same for docker or podman and the node's tools.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

NEEDS: dict[str, str] = {
    "mlflow": "a real `mlflow server`",
    "controlplane": "the control plane `make controlplane` builds (etcd, kube-apiserver, KServe, kubectl) or Go",
    "objectstore": "SeaweedFS, the S3-compatible server `make controlplane` builds",
    "predictor": "a `python -m custom_predictor` process",
    "model": "real models trained or saved with MLflow in the test (seconds each: MLflow infers their requirements)",
    "images": "the project's images built with docker or podman (.ci/install-containers; minutes when cold)",
    "cluster": "a real node (kubelet, containerd, runc, CNI) and Knative Serving here (root; .ci/install-containers)",
    "browser": "Chromium (.ci/install-browser) driven by Playwright",
    "torch": "PyTorch (`make install`)",
}
FAST = "fast"  # each is registered in pyproject.toml (--strict-markers)

# Helpers that make a resource in a way their code does not show (a class, a context manager over a class, a
# script that starts servers of its own, the project's own code, which the scan does not enter), by dotted name.
HELPERS: dict[str, tuple[str, ...]] = {
    "tests.servers.mlflow_server": ("mlflow",),
    "tests.servers.MlflowServer": ("mlflow",),
    "tests.controlplane.plane.running": ("controlplane",),
    "tests.controlplane.build.ensure": ("controlplane",),
    "tests.objectstore.server.seaweedfs": ("objectstore",),
    "tests.objectstore.build.ensure": ("objectstore",),
    "tests.demo.test_demo.DEMO": ("mlflow", "predictor"),  # scripts/demo.py starts MLflow and predictors
    "adapter.local.LocalCluster": ("predictor",),  # DEPLOY_TARGET=local: predictor processes
    "tests.images.containers.built": ("images",),  # scripts/base-image.sh and scripts/images.sh
    "tests.controlplane.build.ensure_node": ("cluster",),
    "tests.controlplane.build.ensure_knative": ("cluster",),
    "tests.cluster.node.running": ("cluster",),
    "tests.cluster.node.Node": ("cluster",),
    "tests.cluster.knative.KnativeServing": ("cluster",),
}
# What code runs, seen in the string constants of one function (or a process's argv): each word of a signature
# is a constant of its own (`[sys.executable, "-m", "custom_predictor"]`), or they follow each other in one
# (`'exec "$0" -m custom_predictor'`).
RUNS: dict[tuple[str, ...], str] = {
    ("-m", "custom_predictor"): "predictor",
    ("mlflow", "server"): "mlflow",
    ("go", "mod"): "controlplane",
    ("tests.controlplane.plane",): "controlplane",  # a Python child that starts one (`python -c "from ..."`)
    ("custom_predictor.check",): "predictor",  # a Python child running the predictor's check in a process of its own
}
# What code calls, by name (`mlflow.sklearn.save_model(...)`, `estimator.fit(...)`).
CALLS = {"save_model": "model", "log_model": "model", "fit": "model"}
# What code imports (or references), by top-level package.
IMPORTS = {"torch": "torch", "playwright": "browser"}
# Programs a process of each tier runs (the guard's view).
PROGRAMS = {
    "etcd": "controlplane",
    "kube-apiserver": "controlplane",
    "kubectl": "controlplane",
    "kserve-manager": "controlplane",
    "go": "controlplane",
    "weed": "objectstore",
    "podman": "images",
    "docker": "images",
    "kubelet": "cluster",
    "containerd": "cluster",
    "chromium": "browser",
    "chrome": "browser",
}
CHROMIUM = Path("/usr/bin/chromium")
TESTS = Path(__file__).resolve().parent


def runs(strings: Iterable[str]) -> set[str]:
    """The needs of a function whose string constants (or a process whose arguments) are `strings`."""
    strings = list(strings)
    whole = set(strings)
    found = set()
    for words, need in RUNS.items():
        if set(words) <= whole or any(_follow(s.split(), words) for s in strings):
            found.add(need)
    return found


def _follow(tokens: list[str], words: tuple[str, ...]) -> bool:
    return any(tuple(tokens[i : i + len(words)]) == words for i in range(len(tokens) - len(words) + 1))


@functools.cache
def _ours(path: str | None) -> bool:
    """Whether code or a module comes from tests/ (by file: tests/predictor's modules are not all named tests.*)."""
    return bool(path) and Path(path).resolve().is_relative_to(TESTS)


def in_ci() -> bool:
    """Whether this run is CI's: CI set to anything but empty, 0 or false (.ci/run sets CI=1)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


class Scanner:
    """The needs of functions, followed through what they reference in tests/ (memoised per code object)."""

    def __init__(self) -> None:
        self.helpers: dict[int, tuple[str, ...]] = {}
        for dotted, needs in HELPERS.items():
            module, _, name = dotted.rpartition(".")
            try:
                self.helpers[id(getattr(importlib.import_module(module), name))] = needs
            except (ImportError, AttributeError) as e:
                raise pytest.UsageError(f"tests/tiers.py HELPERS names {dotted}, which is gone ({e}): update it") from e
        self.seen: dict[types.CodeType, set[str]] = {}

    def of_value(self, value: Any, depth: int = 0) -> set[str]:
        needs = set(self.helpers.get(id(value), ()))
        if callable(value):  # a function, a method, a fixture (its function is `__wrapped__`), a class
            func = inspect.unwrap(getattr(value, "__func__", value))
            module = getattr(func, "__module__", None) or ""
            root = module.partition(".")[0]
            if root in IMPORTS:
                needs.add(IMPORTS[root])
            if isinstance(func, types.FunctionType) and _ours(func.__code__.co_filename):
                needs |= self.of_code(func.__code__, func.__globals__)
        elif isinstance(value, types.ModuleType):
            root = value.__name__.partition(".")[0]
            if root in IMPORTS:
                needs.add(IMPORTS[root])
        elif isinstance(value, dict | list | tuple) and depth == 0:
            items = list(value.values() if isinstance(value, dict) else value)
            needs |= runs(i for i in items if isinstance(i, str))  # an argv: PREDICTOR_ARGV
            for item in items:
                needs |= self.of_value(item, depth + 1)
        return needs

    def of_code(self, code: types.CodeType, namespace: dict[str, Any]) -> set[str]:
        if code in self.seen:
            return self.seen[code]
        needs: set[str] = set()
        self.seen[code] = needs  # recursion ends here
        needs |= runs(c for c in code.co_consts if isinstance(c, str))
        needs |= {need for name, need in CALLS.items() if name in code.co_names}
        modules = [
            namespace[n]
            for n in code.co_names
            if isinstance(namespace.get(n), types.ModuleType) and _ours(getattr(namespace[n], "__file__", None))
        ]
        for name in code.co_names:  # what a body imports is named here too: `import torch`, `from tests.x import y`
            if name.partition(".")[0] in IMPORTS:
                needs.add(IMPORTS[name.partition(".")[0]])
            elif name in sys.modules and _ours(getattr(sys.modules[name], "__file__", None)):
                modules.append(sys.modules[name])
        for name in code.co_names:
            if name in namespace:
                needs |= self.of_value(namespace[name])
            for module in modules:  # `procs.running_predictor(...)`: an attribute of a module named here
                if name in vars(module):
                    needs |= self.of_value(vars(module)[name])
        for const in code.co_consts:
            if isinstance(const, types.CodeType):  # lambdas, nested functions, comprehensions
                needs |= self.of_code(const, namespace)
        return needs


@functools.cache
def _conftests(config: pytest.Config, folder: Path) -> list[types.ModuleType]:
    """The conftest modules that apply to tests in `folder`, nearest first."""
    return sorted(
        (
            p
            for p in config.pluginmanager.get_plugins()
            if isinstance(p, types.ModuleType)
            and Path(getattr(p, "__file__", "") or "/").name == "conftest.py"
            and folder.is_relative_to(Path(p.__file__ or "/").parent)
        ),
        key=lambda m: -len(Path(m.__file__ or "/").parts),
    )


def fixture_functions(item: pytest.Function) -> Iterable[Any]:
    """The functions of the fixtures a test uses, each looked up as pytest does: the test's module first, then the
    conftest files from the test's folder up."""
    conftests = _conftests(item.config, Path(str(item.path)).parent)
    for name in item.fixturenames:
        for namespace in (vars(item.module), *(vars(m) for m in conftests)) if item.module else ():
            found = namespace.get(name)
            if found is not None and hasattr(found, "__wrapped__"):
                yield found
                break


def needs_of(item: pytest.Function, scanner: Scanner) -> set[str]:
    needs = scanner.of_value(item.obj)
    for fixture in fixture_functions(item):
        needs |= scanner.of_value(fixture)
    callspec = getattr(item, "callspec", None)
    for value in callspec.params.values() if callspec else ():
        needs |= scanner.of_value(value)
    return needs


def mark(items: list[pytest.Item]) -> None:
    """Mark every test with what it needs, or `fast`."""
    scanner = Scanner()
    for item in items:
        needs = needs_of(item, scanner) if isinstance(item, pytest.Function) else set()
        for need in sorted(needs) or [FAST]:
            item.add_marker(need)


def missing() -> dict[str, str]:
    """Optional parts that are not here: {need: what to install}."""
    out = {}
    if importlib.util.find_spec("torch") is None:
        out["torch"] = "torch is not installed: `make install` links it into the venv"
    if importlib.util.find_spec("playwright") is None or not CHROMIUM.exists():
        out["browser"] = f"{CHROMIUM} or playwright is missing: run .ci/install-browser, then `make install`"
    return out


def skip_or_fail_missing(items: list[pytest.Item]) -> None:
    """Tests whose optional part is missing: skipped with the reason, or, in CI, the run stops saying what."""
    absent = missing()
    wanted = {need: [i for i in items if i.get_closest_marker(need)] for need in absent}
    wanted = {need: found for need, found in wanted.items() if found}
    if wanted and in_ci():
        lines = [f"{len(found)} tests need {need}: {absent[need]}" for need, found in wanted.items()]
        raise pytest.UsageError("CI runs every test, and some cannot run here:\n  " + "\n  ".join(lines))
    for need, found in wanted.items():
        for item in found:
            item.add_marker(pytest.mark.skip(reason=f"needs {need}: {absent[need]}"))


# ---- the guard: a `fast` test that starts what a tier stands for fails, naming it ------------------------------
_running: list[pytest.Item] = []


def started(executable: Any, args: Any) -> str | None:
    """The tier of a process about to start (`subprocess.Popen`'s audit event), if it is one's."""
    argv = [os.fsdecode(a) for a in ([args] if isinstance(args, str | bytes | os.PathLike) else args or [])]
    program = Path(os.fsdecode(executable or (argv[0] if argv else ""))).name
    return PROGRAMS.get(program) or next(iter(sorted(runs(argv))), None)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "subprocess.Popen" or not _running or not _running[-1].get_closest_marker(FAST):
        return
    need = started(args[0], args[1])
    if need:
        raise RuntimeError(
            f"{_running[-1].nodeid} is marked `{FAST}` but starts {NEEDS[need]}: tests/tiers.py did not see it"
            " coming; add the helper that starts it to HELPERS there"
        )


def guard() -> None:
    """Watch every process the tests start (PEP 578 audit hook; it stays for the life of the interpreter)."""
    sys.addaudithook(_audit)


def running(item: pytest.Item | None) -> None:
    _running[:] = [item] if item is not None else []
