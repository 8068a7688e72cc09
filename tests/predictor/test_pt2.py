"""The pt2 reader (`custom_predictor.pt2`) on real exported programs: the same bits as the module
`torch.export.load` gives, for every row count and both memory layouts; a clear refusal for what it does not
read, tampered archives included; and the PyTorch backend serving with it, checked in a child process, handing
over to `torch.export.load`'s module on a difference.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.predictor import flavors
from tests.predictor.test_fast_path import runtime_for
from tests.predictor.test_flavors import reference, rows_for

torch = pytest.importorskip("torch")  # the PyTorch extra: installed by `make install`, in CI too
nn = torch.nn

from custom_predictor import pt2  # noqa: E402 - after torch: the reader is for torch's archives

pytestmark = pytest.mark.slow

WIDTH = 6


class Mixed(nn.Module):
    """Integers, floats, lists, a size taken from the input, dtypes, a node with two outputs, a parameter view,
    a non-persistent buffer and a tensor constant."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(WIDTH, 4)
        self.bn = nn.BatchNorm1d(4)
        self.norm = nn.LayerNorm(4, eps=1e-3)
        self.drop = nn.Dropout(0.3)
        self.register_buffer("scale", torch.linspace(0.5, 2.0, 4), persistent=False)
        self.register_buffer("part", self.lin.weight.detach()[:, 1:4])  # strided, offset 1 into the weight
        self.offset = torch.tensor([0.25, -0.5, 1.0, 0.0])  # a tensor constant

    def forward(self, x: Any) -> Any:
        h = self.drop(torch.relu(self.bn(self.lin(x))))
        h = self.norm(h) * self.scale + self.offset
        top = torch.max(h, dim=1, keepdim=True).values
        flat = h.view(x.shape[0], -1)
        side = x[:, 1:4] @ self.part.t()
        both = torch.cat([flat, side, top.clamp(min=-1.5, max=float("inf"))], dim=1)
        return torch.softmax(both.to(torch.float64), dim=1).to(torch.float32)


class Tied(nn.Module):
    """One weight used twice (encoder and decoder), float64."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(WIDTH, 3, bias=False)
        self.bias = nn.Parameter(torch.randn(WIDTH))

    def forward(self, x: Any) -> Any:
        return torch.tanh(x @ self.enc.weight.t()) @ self.enc.weight + self.bias


def _export(cls: type[nn.Module], path: Path, dtype: Any = torch.float32, *, dynamic: bool = True) -> Path:
    torch.manual_seed(0)
    module = cls().to(dtype)
    for b in module.buffers():  # running statistics away from 0 and 1
        if b.is_floating_point():
            b.uniform_(0.5, 1.5)
    module.eval()
    x = torch.randn(5, WIDTH, dtype=dtype)
    shapes = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    torch.export.save(torch.export.export(module, (x,), dynamic_shapes=shapes), str(path))
    return path


def _rewrite(src: Path, dst: Path, member: str, change: Callable[[bytes], bytes | None]) -> Path:
    """A copy of the archive with the member ending in `member` changed (None: left out)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data: bytes | None = zin.read(info)
            if info.filename.endswith(member):
                data = change(data)
            if data is not None:
                zout.writestr(info, data)
    return dst


def _json_change(fn: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        doc = json.loads(data)
        fn(doc)
        return json.dumps(doc).encode()

    return change


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pt2")
    return {
        "mixed": _export(Mixed, root / "mixed.pt2"),
        "tied": _export(Tied, root / "tied.pt2", torch.float64),
        "static": _export(Tied, root / "static.pt2", dynamic=False),
    }


@pytest.mark.parametrize(("name", "dtype"), [("mixed", "float32"), ("tied", "float64")])
def test_the_reader_gives_the_modules_bits(programs: dict[str, Path], name: str, dtype: str) -> None:
    program = pt2.read(programs[name], torch, dtype=dtype, width=WIDTH)
    module = torch.export.load(str(programs[name])).module()
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 33):
        for order in ("C", "F"):  # a tensor signature's rows, a DataFrame's columns
            x = torch.from_numpy(np.asarray(rng.normal(size=(n, WIDTH)), dtype=dtype, order=order))
            with torch.no_grad():
                have, want = program(x), module(x)
            assert have.dtype == want.dtype and have.shape == want.shape
            assert have.numpy().tobytes() == want.numpy().tobytes(), (name, n, order)


def test_the_reader_imports_no_compiler(programs: dict[str, Path]) -> None:
    """The point of it: reading and running an archive leaves torch._dynamo and torch._inductor unimported."""
    code = (
        "import sys, torch\n"
        "from custom_predictor import pt2\n"
        f"p = pt2.read({str(programs['mixed'])!r}, torch, dtype='float32', width={WIDTH})\n"
        f"assert p(torch.ones(3, {WIDTH})).shape == (3, 9)\n"
        "print(sorted(m for m in ('torch._dynamo', 'torch._inductor', 'torch.export._trace') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "[]"


def _target(node: int, value: str) -> Callable[[dict[str, Any]], None]:
    def set_target(doc: dict[str, Any]) -> None:
        doc["graph_module"]["graph"]["nodes"][node]["target"] = value

    return set_target


def _weights(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def on_first(doc: dict[str, Any]) -> None:
        fn(next(iter(doc["config"].values())))

    return on_first


def _schema(doc: dict[str, Any]) -> None:
    doc["schema_version"]["major"] = 7


def _strides(entry: dict[str, Any]) -> None:
    entry["tensor_meta"]["strides"] = [{"as_int": s["as_int"] * 1000} for s in entry["tensor_meta"]["strides"]]


def _rank(entry: dict[str, Any]) -> None:
    entry["tensor_meta"]["strides"].append({"as_int": 1})


TAMPERED: list[tuple[str, str, Callable[[bytes], bytes | None], str]] = [
    ("a python callable", "models/model.json", _json_change(_target(0, "os.system")), "only torch.ops.aten"),
    ("an unknown operator", "models/model.json", _json_change(_target(0, "torch.ops.aten.nope.default")), "not in"),
    (
        "an operator that reads files",
        "models/model.json",
        _json_change(_target(0, "torch.ops.aten.from_file.default")),
        "reads or writes files",
    ),
    ("another schema", "models/model.json", _json_change(_schema), "schema version 7"),
    (
        "a path as payload name",
        "model_weights_config.json",
        _json_change(_weights(lambda e: e.update(path_name="../w"))),
        "payload name",
    ),
    (
        "a pickled weight",
        "model_weights_config.json",
        _json_change(_weights(lambda e: e.update(use_pickle=True))),
        "pickled",
    ),
    ("strides beyond the data", "model_weights_config.json", _json_change(_weights(_strides)), "beyond its"),
    ("strides of another rank", "model_weights_config.json", _json_change(_weights(_rank)), "do not describe"),
    ("a truncated weight", "weights/weight_0", lambda b: b[:-3], "not whole"),
    ("no program", "models/model.json", lambda b: None, "0 programs"),
    ("truncated json", "models/model.json", lambda b: b[: len(b) // 2], "unexpected archive content"),
]


@pytest.mark.parametrize(("case", "member", "change", "reason"), TAMPERED, ids=[t[0] for t in TAMPERED])
def test_a_tampered_archive_is_refused_with_the_reason(
    programs: dict[str, Path], tmp_path: Path, case: str, member: str, change: Any, reason: str
) -> None:
    path = _rewrite(programs["tied"], tmp_path / "t.pt2", member, change)
    with pytest.raises(pt2.Unsupported, match=reason):
        pt2.read(path, torch, dtype="float64", width=WIDTH)


def test_a_file_that_is_no_archive_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.pt2").write_bytes(b"PK\x03\x04 not really a zip" * 10)
    with pytest.raises(pt2.Unsupported, match="not a readable archive"):
        pt2.read(tmp_path / "t.pt2", torch, dtype="float64", width=WIDTH)


class CountsCalls(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("n", torch.zeros(1))

    def forward(self, x: Any) -> Any:
        self.n.add_(1)
        return x + self.n


class ScalesItsInput(nn.Module):
    def forward(self, x: Any) -> Any:
        return x.mul_(2)


class WritesAView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("b", torch.zeros(2, WIDTH))

    def forward(self, x: Any) -> Any:
        self.b.t()[0].add_(1)
        return x + self.b[0]


class InPlaceReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin, self.act = nn.Linear(WIDTH, 3), nn.ReLU(inplace=True)

    def forward(self, x: Any) -> Any:
        return self.act(self.lin(x))


@pytest.mark.parametrize("cls", [CountsCalls, ScalesItsInput, WritesAView])
def test_a_program_that_writes_its_weights_or_input_is_refused(cls: type[nn.Module], tmp_path: Path) -> None:
    """Called many times, from several threads, such a program would drift: `torch.export.load`'s to serve."""
    path = _export(cls, tmp_path / "m.pt2")
    with pytest.raises(pt2.Unsupported, match="writes a weight or the input"):
        pt2.read(path, torch, dtype="float32", width=WIDTH)


def test_an_in_place_operator_on_an_intermediate_is_read(tmp_path: Path) -> None:
    path = _export(InPlaceReLU, tmp_path / "m.pt2")
    program, module = pt2.read(path, torch, dtype="float32", width=WIDTH), torch.export.load(str(path)).module()
    x = torch.randn(4, WIDTH)
    with torch.no_grad():
        assert program(x).numpy().tobytes() == module(x).numpy().tobytes()


def test_what_the_reader_does_not_run_is_refused(programs: dict[str, Path], tmp_path: Path) -> None:
    """A fixed row count, another dtype or width, several inputs or outputs: `torch.export.load`'s to serve."""
    with pytest.raises(pt2.Unsupported, match="row count is not free"):
        pt2.read(programs["static"], torch, dtype="float32", width=WIDTH)
    with pytest.raises(pt2.Unsupported, match="takes float64, not float32"):
        pt2.read(programs["tied"], torch, dtype="float32", width=WIDTH)
    with pytest.raises(pt2.Unsupported, match="not rows x 5"):
        pt2.read(programs["tied"], torch, dtype="float64", width=5)

    class Two(nn.Module):
        def forward(self, x: Any, y: Any) -> Any:
            return x + y

    class Pair(nn.Module):
        def forward(self, x: Any) -> Any:
            return x + 1, x * 2

    x = torch.randn(5, WIDTH)
    torch.export.save(torch.export.export(Two(), (x, x)), str(tmp_path / "two.pt2"))
    torch.export.save(torch.export.export(Pair(), (x,)), str(tmp_path / "pair.pt2"))
    with pytest.raises(pt2.Unsupported, match="2 user inputs"):
        pt2.read(tmp_path / "two.pt2", torch, dtype="float32", width=WIDTH)
    with pytest.raises(pt2.Unsupported, match="not one tensor"):
        pt2.read(tmp_path / "pair.pt2", torch, dtype="float32", width=WIDTH)


# ---- the backend ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return flavors.save_torch(tmp_path_factory.mktemp("torch") / "m")


def test_the_backend_serves_with_the_reader_and_checks_it(exported_model: Path) -> None:
    rt = runtime_for(exported_model)
    assert rt.kind == "pytorch" and rt.backend.program is not None and rt.backend.module is None
    assert rt.wait_checked(180) and rt.kernel_check == "passed"
    assert rt.backend.describe()["runs"] == "pt2 reader"
    rows = rows_for(rt.contract, 9, seed=3)
    assert rt.predict(rows) == reference(exported_model, rows, rt.contract.input_names)


def test_the_module_takes_over_when_the_reader_differs(exported_model: Path) -> None:
    """The safety net: a program one unit in the last place off loses to `torch.export.load`'s module."""
    rt = runtime_for(exported_model, verify_kernel=False)
    faithful = rt.backend.program
    rt.backend.program = lambda x: torch.nextafter(faithful(x), torch.tensor(np.inf, dtype=x.dtype))
    rt.check_kernel()
    assert (rt.kind, rt.kernel_check, rt.ready) == ("pytorch", "mismatch", True)
    assert rt.backend.program is None and rt.backend.module is not None
    assert rt.backend.describe()["runs"] == "module"
    rows = rows_for(rt.contract, 9, seed=4)
    assert rt.predict(rows) == reference(exported_model, rows, rt.contract.input_names)


def test_a_difference_the_library_cannot_serve_fails_the_model(
    exported_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from custom_predictor.backends import pytorch

    rt = runtime_for(exported_model, verify_kernel=False)
    faithful = rt.backend.program
    rt.backend.program = lambda x: faithful(x) + 1.0

    def cannot(*args: Any) -> Any:
        raise RuntimeError("no such archive")

    monkeypatch.setattr(pytorch, "_load_exported", cannot)
    rt.check_kernel()
    assert rt.state == "failed" and rt.kernel_check == "mismatch"
    want = "the pt2 program differs from torch.export.load, which cannot load the model: RuntimeError: no such archive"
    assert rt.reason == want


def test_a_check_that_cannot_run_leaves_the_reader_serving(exported_model: Path, tmp_path: Path) -> None:
    import shutil

    folder = shutil.copytree(exported_model, tmp_path / "m")
    rt = runtime_for(folder, verify_kernel=False)
    (folder / "data" / "model.pt2").unlink()  # the child's torch.export.load finds nothing
    rt.check_kernel()
    assert (rt.kernel_check, rt.ready) == ("unavailable", True) and rt.backend.program is not None
    rows = rows_for(rt.contract, 3)
    assert rt.predict(rows) == reference(exported_model, rows, rt.contract.input_names)
