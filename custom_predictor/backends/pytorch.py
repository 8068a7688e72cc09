"""A PyTorch model (the pytorch flavor): the `nn.Module` itself, loaded as `mlflow.pytorch` loads it, called under
`torch.no_grad()` on a tensor of the rows.

Inputs as pyfunc gives them, in the same memory layout (matrix products sum in a layout's order): with a tensor
signature, a row-major array of the signature's dtype (float32 or float64, the model's own); otherwise the
DataFrame's values as float32, column-major as `DataFrame.to_numpy` returns them. Outputs as pyfunc returns
them: the tensor's values for a tensor input, the DataFrame's columns otherwise (`outputs.frame_like`).
Exported programs (`model.pt2`, MLflow 3's default format) load with `torch.export.load`, pickled modules
(`model.pth`) with `torch.load` and the recorded pickle module; pytorch-forecasting models are left to pyfunc, and
so are exported ones when pickle deserialization is off (MLflow then vets the archive itself).
Neighbours: `backends.candidates` tries it for the pytorch flavor; `pyfunc` takes what it refuses.
"""

from __future__ import annotations

import importlib
from typing import Any

from custom_predictor.backends.base import Backend, ModelFailure, NotApplicable, matrix
from custom_predictor.backends.sklearn import refuse_pickle
from custom_predictor.outputs import frame_like


class TorchBackend(Backend):
    kind = "pytorch"
    inline = True

    def load(self) -> None:
        conf, m = self.model.flavor_conf("pytorch"), self.model
        if conf is None or not m.options.fast_path or not m.numeric or m.has_params or m.has_code:
            raise NotApplicable("not a pytorch model with numeric inputs, no params and no code")
        data = m.model_dir / str(conf.get("model_data", "data"))
        path, info, exported = data / "model.pth", data / "pickle_module_info.txt", data / "model.pt2"
        if exported.is_file():
            if not m.options.allow_pickle:
                raise NotApplicable("pickle deserialization is off: pyfunc vets the exported archive")
            import torch

            module = torch.export.load(str(exported)).module()
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
        self.dtype = m.tensor_dtype or "float32"
        self.tensor = m.tensor_dtype is not None
        self.version = torch.__version__

    def predict(self, rows: list[dict[str, Any]], *, may_block: bool = True) -> Any:
        import numpy as np

        x = matrix(rows, self.model.names, self.dtype)  # column-major, as a DataFrame's values are
        if self.tensor:
            x = np.ascontiguousarray(x)  # row-major, as an array built from rows is (the layout changes BLAS sums)
        with self.torch.no_grad():
            out = self.module(self.torch.from_numpy(x))
        if not isinstance(out, self.torch.Tensor):
            raise ModelFailure(f"the model returned {type(out).__name__}, not a tensor")
        values = out.numpy()
        return values if self.tensor else frame_like(values)

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "torch": self.version}
