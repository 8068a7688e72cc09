"""A PyTorch model (the pytorch flavor): the `nn.Module` itself, loaded as `mlflow.pytorch` loads it, called under
`torch.no_grad()` on a tensor of the rows.

Inputs as pyfunc gives them, in the same memory layout (matrix products sum in a layout's order): with a tensor
signature, a row-major array of the signature's dtype (float32 or float64, the model's own); otherwise the
DataFrame's values as float32, column-major as `DataFrame.to_numpy` returns them. Outputs as pyfunc returns
them: the tensor's values for a tensor input, the DataFrame's columns otherwise (`outputs.frame_like`).
Exported programs (`model.pt2`, MLflow 3's default format) are read by `pt2` and served at once: its reader
takes milliseconds where `torch.export.load` imports torch's compiler stack (1.4 s of a cold start). Once
serving, `verify` checks the program against `torch.export.load`'s module on probe rows in a low-priority child
process, to the last bit; on a difference `replacement` loads that module here and it serves from then on. An
archive `pt2` does not read loads with `torch.export.load` at once. That module's graph is then called directly
(`_Direct`) once the module has answered the same row count with the same bits: its per-call wrappers (input
pytree, shape guards, a dynamo config patch) cost 60 of its 83 us on a small MLP.
Pickled modules (`model.pth`) load with `torch.load` and the recorded pickle module; pytorch-forecasting models
are left to pyfunc, and so are exported ones when pickle deserialization is off (MLflow then vets the archive).
Neighbours: `backends.candidates` tries it for the pytorch flavor; `pyfunc` takes what it refuses; `runtime`
runs `verify` in a thread and swaps in `replacement()`.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Any

from custom_predictor import pt2
from custom_predictor.backends.base import Backend, ModelFailure, NotApplicable, matrix
from custom_predictor.backends.sklearn import refuse_pickle
from custom_predictor.outputs import frame_like

log = logging.getLogger("custom_predictor.runtime")

PROBE_SINGLES = 8
"""Probe rows also checked one at a time (a 1-row call may take another code path than a batch)."""


class TorchBackend(Backend):
    kind = "pytorch"
    inline = True

    def load(self) -> None:
        conf, m = self.model.flavor_conf("pytorch"), self.model
        if conf is None or not m.options.fast_path or not m.numeric or m.has_params or m.has_code:
            raise NotApplicable("not a pytorch model with numeric inputs, no params and no code")
        data = m.model_dir / str(conf.get("model_data", "data"))
        path, info, exported = data / "model.pth", data / "pickle_module_info.txt", data / "model.pt2"
        self.direct: _Direct | None = None
        self.program: pt2.Program | None = None
        self.exported = exported
        self.dtype = m.tensor_dtype or "float32"
        module: Any = None
        if exported.is_file():
            if not m.options.allow_pickle:
                raise NotApplicable("pickle deserialization is off: pyfunc vets the exported archive")
            import torch

            try:
                self.program = pt2.read(exported, torch, dtype=self.dtype, width=len(m.names))
            except pt2.Unsupported as e:
                log.info("pt2 archive left to torch.export.load: %s", e)
                module, self.direct = _load_exported(torch, exported)
        elif path.is_file() and info.is_file():
            refuse_pickle(m, "model")
            import torch

            pickle_module = importlib.import_module(info.read_text().strip())
            module = torch.load(path, map_location="cpu", pickle_module=pickle_module, weights_only=False)
            if not isinstance(module, torch.nn.Module) or type(module).__module__.startswith("pytorch_forecasting"):
                raise NotApplicable("not a plain nn.Module")
            module.eval()
        else:
            raise NotApplicable("neither data/model.pt2 nor data/model.pth")
        self.module, self.torch = module, torch
        self.checked: set[int] = set()  # row counts the module accepted and the direct call matched
        self.check: str | None = None  # the program against torch.export.load: pending, passed, mismatch...
        self.tensor = m.tensor_dtype is not None
        self.version = torch.__version__

    def predict(self, rows: list[dict[str, Any]], *, may_block: bool = True) -> Any:
        values = self._values(matrix(rows, self.model.names, self.dtype))  # column-major, as a DataFrame's are
        return values if self.tensor else frame_like(values)

    def _values(self, x: Any) -> Any:
        """The model's output for a matrix as numpy: row-major for a tensor signature, as an array built from
        rows is (the layout changes BLAS sums), else as given."""
        import numpy as np

        if self.tensor:
            x = np.ascontiguousarray(x)
        with self.torch.no_grad():
            out = self._call(self.torch.from_numpy(x))
        if not isinstance(out, self.torch.Tensor):
            raise ModelFailure(f"the model returned {type(out).__name__}, not a tensor")
        return out.numpy()

    def _call(self, x: Any) -> Any:
        """The output for `x`: the archive's program when `pt2` read it; else the module's, from the direct call
        when the module accepted and matched this row count. Export guards depend on shapes only, and the dtype
        and width are the signature's: the row count decides."""
        program = self.program
        if program is not None:
            return program(x)
        direct, n = self.direct, int(x.shape[0])
        if direct is not None and n in self.checked:
            return direct(x)
        out = self.module(x)
        if direct is not None and len(self.checked) < _MAX_CHECKED:
            try:
                same = _same(out, direct(x), self.torch)
            except Exception:  # noqa: BLE001 - the module answered; the graph alone cannot stand in for it
                same = False
            if same:
                self.checked.add(n)
            else:
                self.direct = None  # the module serves from here on
        return out

    def describe(self) -> dict[str, str]:
        how = "pt2 reader" if self.program is not None else "module"
        return {"kind": self.kind, "torch": self.version, "runs": how, "kernel_check": self.check or "none"}

    def verifies(self) -> bool:
        return self.program is not None

    def verify(self, test_rows: list[dict[str, Any]], closing: threading.Event) -> str:
        """The program against `torch.export.load`'s module on probe rows (all at once and the first few one by
        one), in a child process at low priority: passed, mismatch or unavailable. Importing the export
        machinery here would hold this process's GIL for over a second while it serves."""
        from custom_predictor.check import TIMEOUT_SECONDS, probe_matrix, run_in_child

        try:
            x = probe_matrix(self.model.contract, test_rows, self.dtype)
            have = [self._values(x), *(self._values(x[i : i + 1]) for i in range(min(PROBE_SINGLES, len(x))))]
            want = run_in_child(reference_outputs, (self.exported, x, self.tensor), TIMEOUT_SECONDS, closing)
        except Exception as e:  # noqa: BLE001 - cannot check (the library fails to load it, child died): say so
            log.warning("pt2 program unchecked: %s: %s", e.__class__.__name__, str(e)[:300])
            self.check = "unavailable"
            return self.check
        if len(want) == len(have) and all(_same_bits(a, b) for a, b in zip(want, have, strict=True)):
            log.info("pt2 program matches torch.export.load on %d probe rows", len(x))
            self.check = "passed"
        else:
            log.error("pt2 program differs from torch.export.load on probe rows: serving with its module from now on")
            self.check = "mismatch"
        return self.check

    def replacement(self) -> Backend:
        """After a mismatch: this backend with `torch.export.load`'s module instead of the program."""
        try:
            self.module, self.direct = _load_exported(self.torch, self.exported)
        except Exception as e:  # noqa: BLE001 - the library cannot load what the program ran: a failure
            raise ModelFailure(
                f"the pt2 program differs from torch.export.load, which cannot load the model: "
                f"{e.__class__.__name__}: {str(e)[:300]}"
            ) from None
        self.program = None
        return self


def _load_exported(torch: Any, exported: Path) -> tuple[Any, _Direct | None]:
    program = torch.export.load(str(exported))
    return program.module(), _Direct.of(program)


def reference_outputs(exported: Path, x: Any, tensor: bool) -> list[Any]:
    """In the check's child: what `torch.export.load`'s module gives for `x` and its first rows one by one,
    called as `TorchBackend` calls its model."""
    import numpy as np
    import torch

    module = torch.export.load(str(exported)).module()

    def values(m: Any) -> Any:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(m) if tensor else m)).numpy()

    return [values(x), *(values(x[i : i + 1]) for i in range(min(PROBE_SINGLES, len(x))))]


_MAX_CHECKED = 4096


class _Direct:
    """An exported program's graph called with its own state: `graph_module(*state, x)`. Only for the plain
    case, one tensor in and one out, the rest parameters, buffers and constant tensors."""

    def __init__(self, graph: Any, before: list[Any], after: list[Any]) -> None:
        self.graph, self.before, self.after = graph, before, after

    @classmethod
    def of(cls, program: Any) -> _Direct | None:
        from torch.export.graph_signature import InputKind, OutputKind

        sig = program.graph_signature
        if [s.kind for s in sig.output_specs] != [OutputKind.USER_OUTPUT]:
            return None
        state: list[Any] = []
        slots: list[int] = []
        for i, spec in enumerate(sig.input_specs):
            if spec.kind == InputKind.USER_INPUT:
                slots.append(i)
                state.append(None)
            elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                value = program.state_dict.get(spec.target)
                value = program.constants.get(spec.target) if value is None else value
                if value is None:
                    return None
                state.append(value)
            else:  # custom objects, effect tokens: the module handles them
                return None
        if len(slots) != 1:
            return None
        return cls(program.graph_module, state[: slots[0]], state[slots[0] + 1 :])

    def __call__(self, x: Any) -> Any:
        return self.graph(*self.before, x, *self.after)[0]


def _same(a: Any, b: Any, torch: Any) -> bool:
    """Both tensors of one dtype and shape with the same bits (NaN included)."""
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and _same_bits(a.numpy(), b.numpy())


def _same_bits(a: Any, b: Any) -> bool:
    """Two numpy arrays of one dtype and shape with the same bits (NaN included)."""
    return bool(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes())
