"""A PyTorch model (the pytorch flavor): the `nn.Module` itself, loaded as `mlflow.pytorch` loads it, called under
`torch.no_grad()` on a tensor of the columns.

Inputs as pyfunc gives them, in the same memory layout (matrix products sum in a layout's order): with a tensor
signature, a row-major array of the signature's dtype (float32 or float64, the model's own); otherwise the
DataFrame's values as float32, column-major as `DataFrame.to_numpy` returns them. Outputs as pyfunc returns
them: the tensor's values for a tensor input, the DataFrame's columns otherwise (`outputs.frame_like`).
Exported programs (`model.pt2`, MLflow 3's default format) load with `torch.export.load`; the module it returns is
then called through its graph directly (`_Direct`: the program's public `graph_module`, `graph_signature` and
state) once the module has answered the same row count with the same bits: its per-call wrappers (input pytree,
shape guards, a dynamo config patch) cost 60 of its 83 us on a small MLP.
Pickled modules (`model.pth`) load with `torch.load` and the recorded pickle module; pytorch-forecasting models
are left to pyfunc, and so are exported ones when pickle deserialization is off (MLflow then vets the archive).
Neighbours: `backends.candidates` tries it for the pytorch flavor; `pyfunc` takes what it refuses.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from custom_predictor.backends.base import Backend, ModelFailure, NotApplicable
from custom_predictor.backends.sklearn import refuse_pickle
from custom_predictor.columns import Columns
from custom_predictor.outputs import frame_like

log = logging.getLogger("custom_predictor.runtime")


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
        self.dtype = m.tensor_dtype or "float32"
        module: Any = None
        if exported.is_file():
            if not m.options.allow_pickle:
                raise NotApplicable("pickle deserialization is off: pyfunc vets the exported archive")
            import torch

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
        self.tensor = m.tensor_dtype is not None
        self.version = torch.__version__

    def predict(self, columns: Columns, *, may_block: bool = True) -> Any:
        values = self._values(columns.matrix(self.model.names, self.dtype))  # column-major, as a DataFrame's are
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
        """The module's output for `x`, from the direct call when the module accepted and matched this row count.
        Export guards depend on shapes only, and the dtype and width are the signature's: the row count decides."""
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
        how = "graph" if self.direct is not None else "module"
        return {"kind": self.kind, "torch": self.version, "runs": how}


def _load_exported(torch: Any, exported: Path) -> tuple[Any, _Direct | None]:
    program = torch.export.load(str(exported))
    return program.module(), _Direct.of(program)


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
