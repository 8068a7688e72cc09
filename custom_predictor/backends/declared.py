"""What an unsigned model declares about its inputs: a model logged with neither signature nor input example
still knows its width, and often its column names, and the predictor serves a typed API from that.

- scikit-learn (and a Pipeline's first step): `feature_names_in_`, else `n_features_in_`, read from the model file
  with `modelfile` (nothing in it runs, scikit-learn is not imported);
- XGBoost: the Booster's `feature_names`, else `num_features()`;
- LightGBM: the Booster's `feature_name()` (a `Booster` file), or a pickled/skops `LGBMModel`'s `_n_features_in`.
Inputs are doubles (what these libraries compute on); unnamed ones are `x0`, `x1`, ... as for tensor signatures.
`declared_inputs` gives None when the model declares nothing (or pickles are not allowed): it is then served untyped.
Neighbours: `app.resolve_contract` asks it for a model without signature and contract.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("custom_predictor.runtime")


def declared_inputs(model_dir: Path, mlmodel: dict[str, Any], allow_pickle: bool) -> tuple[list[str], str] | None:
    """(input names, where they were read) for an unsigned model, or None."""
    flavors = mlmodel.get("flavors") or {}
    try:
        if isinstance(flavors.get("sklearn"), dict) and allow_pickle:
            return _sklearn(model_dir, flavors["sklearn"])
        if isinstance(flavors.get("xgboost"), dict):
            return _xgboost(model_dir, flavors["xgboost"])
        if isinstance(flavors.get("lightgbm"), dict):
            return _lightgbm(model_dir, flavors["lightgbm"], allow_pickle)
    except Exception as e:  # noqa: BLE001 - whatever an unreadable file raises: the model is then served untyped
        log.info("the model's declared inputs cannot be read (%s): serving it untyped", e.__class__.__name__)
    return None


def _named(names: Any, count: Any, where: str) -> tuple[list[str], str] | None:
    if names is not None and len(names):
        return [str(n) for n in names], f"{where} feature names"
    if isinstance(count, int) and count > 0:
        return [f"x{i}" for i in range(count)], f"{where} feature count"
    return None


def _sklearn(model_dir: Path, conf: dict[str, Any]) -> tuple[list[str], str] | None:
    import numpy as np

    from custom_predictor import modelfile

    path = model_dir / str(conf.get("pickled_model", "model.pkl"))
    obj = modelfile.read(path, str(conf.get("serialization_format", "pickle")), conf.get("skops_trusted_types"), None)
    first = obj
    while isinstance(first, modelfile.Obj) and first.cls == "sklearn.pipeline.Pipeline":
        steps = first.state.get("steps") if isinstance(first.state, dict) else None
        first = steps[0][1] if steps and isinstance(steps[0], tuple | list) else None
    state = first.state if isinstance(first, modelfile.Obj) and isinstance(first.state, dict) else {}
    names = state.get("feature_names_in_")
    return _named(None if names is None else np.asarray(names).tolist(), state.get("n_features_in_"), "scikit-learn")


def _xgboost(model_dir: Path, conf: dict[str, Any]) -> tuple[list[str], str] | None:
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(str(model_dir / str(conf["data"])))
    return _named(booster.feature_names, booster.num_features(), "XGBoost")


def _lightgbm(model_dir: Path, conf: dict[str, Any], allow_pickle: bool) -> tuple[list[str], str] | None:
    from custom_predictor import modelfile

    path = model_dir / str(conf["data"])
    if str(conf.get("model_class", "lightgbm.basic.Booster")) == "lightgbm.basic.Booster":
        import lightgbm

        booster = lightgbm.Booster(model_file=str(path))
        return _named(booster.feature_name(), booster.num_feature(), "LightGBM")
    if not allow_pickle:
        return None
    fmt = str(conf.get("serialization_format", "cloudpickle"))
    obj = modelfile.read(path, fmt, conf.get("skops_trusted_types"), None)
    state = obj.state if isinstance(obj, modelfile.Obj) and isinstance(obj.state, dict) else {}
    return _named(None, state.get("_n_features_in"), "LightGBM")
