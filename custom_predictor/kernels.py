"""numpy kernels: common scikit-learn estimators evaluated without importing scikit-learn.

`compile_model(obj, method, n_features)` turns an estimator read by `modelfile` into a function of a float64
matrix, or returns None (with the reason) when any part is not covered. Each kernel repeats scikit-learn
1.9's own arithmetic, in the same order and with the same numpy calls, so its outputs are the library's,
bit for bit; tests compare them with pyfunc's over many models, and `runtime` checks them against the real
estimator once it has loaded it in the background.
Covered: Pipeline; StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, SimpleImputer (numeric);
LogisticRegression, LinearRegression, Ridge, Lasso, ElasticNet; DecisionTree, ExtraTree, RandomForest and
ExtraTrees, classifier and regressor, single output. Methods: predict, and predict_proba for classifiers.
Input a kernel would have to treat differently from plain numbers (NaN where the estimator does not impute,
infinities) raises `NeedsEstimator`, and the caller asks scikit-learn itself.
Neighbours: `modelfile` reads the file; `runtime` compiles, verifies and calls the kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from custom_predictor.modelfile import TREE, Obj

Fn = Callable[[np.ndarray], np.ndarray]

SKLEARN_RELEASE = "1.9"
"""The scikit-learn release whose arithmetic the kernels repeat: they serve a model only when both the model's
scikit-learn (its requirements) and the installed one (the image's pin) are of this release."""


class NeedsEstimator(Exception):
    """This input needs the real estimator (a NaN or an infinity where the kernel does not model it)."""


class Unsupported(Exception):
    """The model has a part the kernels do not cover; the message says which."""


def compile_model(obj: Any, method: str, n_features: int) -> Fn:
    """A kernel computing `method` of `obj` on an (n, n_features) matrix. Raises `Unsupported`."""
    if method not in ("predict", "predict_proba"):
        raise Unsupported(f"method {method}")
    steps = _steps(obj)
    width = n_features
    transforms: list[tuple[Fn, bool]] = []
    for step in steps[:-1]:
        build = _TRANSFORMS.get(_cls(step))
        if build is None:
            raise Unsupported(f"transformer {_cls(step)}")
        fn, width, allow_nan = build(step, width)
        transforms.append((fn, allow_nan))
    final = steps[-1]
    build_final = _ESTIMATORS.get(_cls(final))
    if build_final is None:
        raise Unsupported(f"estimator {_cls(final)}")
    predict = build_final(final, method, width)

    def kernel(x: np.ndarray) -> np.ndarray:
        """`x` is float64, or int64 when every input is an integer (estimators then see int64, as from pyfunc)."""
        with np.errstate(all="ignore"):  # an overflow shows as inf, which the next check hands to scikit-learn
            for fn, allow_nan in transforms:
                _check(x, allow_nan)
                x = fn(x.astype(np.float64) if x.dtype.kind in "iu" else x)  # transformers take floats only
            _check(x, False)
            return predict(x)

    return kernel


def _check(x: np.ndarray, allow_nan: bool) -> None:
    """scikit-learn validates every step's input; where it would reject (or treat apart), step aside."""
    if allow_nan:
        if np.isinf(x).any():
            raise NeedsEstimator("infinite value")
    elif not np.isfinite(x).all():
        raise NeedsEstimator("NaN or infinite value")


def feature_names(obj: Any) -> list[str] | None:
    """The column names the model was fitted with (its first step's `feature_names_in_`), if it kept them."""
    first = _steps(obj)[0]
    names = _state(first).get("feature_names_in_")
    return None if names is None else [str(n) for n in np.asarray(names).tolist()]


# ---- reading an estimator's state --------------------------------------------------------------------------
def _cls(obj: Any) -> str:
    return obj.cls if isinstance(obj, Obj) else type(obj).__name__


def _state(obj: Obj) -> dict[str, Any]:
    if not isinstance(obj.state, dict):
        raise Unsupported(f"{obj.cls} state")
    return obj.state


def _get(obj: Obj, key: str, kind: type | tuple[type, ...]) -> Any:
    value = _state(obj).get(key)
    if not isinstance(value, kind):
        raise Unsupported(f"{obj.cls}.{key}")
    return value


def _vector(obj: Obj, key: str, width: int | None) -> np.ndarray:
    v = _get(obj, key, np.ndarray)
    if v.dtype != np.float64 or v.ndim != 1 or (width is not None and v.shape[0] != width):
        raise Unsupported(f"{obj.cls}.{key} shape or dtype")
    return v


def _flag(obj: Obj, key: str, default: bool | None = None) -> bool:
    value = _state(obj).get(key, default)
    if not isinstance(value, bool | np.bool_):
        raise Unsupported(f"{obj.cls}.{key}")
    return bool(value)


def _n_features(obj: Obj, width: int) -> None:
    n = _state(obj).get("n_features_in_")
    if n is not None and int(n) != width:
        raise Unsupported(f"{obj.cls} expects {n} features, gets {width}")


def _steps(obj: Any) -> list[Obj]:
    if _cls(obj) != "sklearn.pipeline.Pipeline":
        return [obj]
    steps = _get(obj, "steps", list)
    out = []
    for step in steps:
        if not (isinstance(step, tuple | list) and len(step) == 2):
            raise Unsupported("Pipeline.steps")
        if step[1] is None or step[1] == "passthrough":
            continue
        out.extend(_steps(step[1]))
    if not out or steps[-1][1] in (None, "passthrough"):
        raise Unsupported("a Pipeline without a final estimator")
    return out


# ---- transformers: (state, width in) -> (function, width out, accepts NaN) -------------------------------
def _center_scale(center: str, with_center: str, scale: str, with_scale: str) -> Callable[..., tuple[Fn, int, bool]]:
    """StandardScaler (mean_, scale_) and RobustScaler (center_, scale_): `x -= center; x /= scale`."""

    def build(o: Obj, width: int) -> tuple[Fn, int, bool]:
        _n_features(o, width)
        shift = _vector(o, center, width) if _flag(o, with_center) else None
        factor = _vector(o, scale, width) if _flag(o, with_scale) else None

        def fn(x: np.ndarray) -> np.ndarray:
            x = x.copy(order="K")  # keep the column-major layout, as check_array does
            if shift is not None:
                x -= shift
            if factor is not None:
                x /= factor
            return x

        return fn, width, True

    return build


def _min_max_scaler(o: Obj, width: int) -> tuple[Fn, int, bool]:
    _n_features(o, width)
    scale, offset = _vector(o, "scale_", width), _vector(o, "min_", width)
    clip = _flag(o, "clip", False)
    low, high = _get(o, "feature_range", tuple) if clip else (0, 1)

    def fn(x: np.ndarray) -> np.ndarray:
        x = x * scale
        x += offset
        if clip:
            np.clip(x, np.float64(low), np.float64(high), out=x)
        return x

    return fn, width, True


def _max_abs_scaler(o: Obj, width: int) -> tuple[Fn, int, bool]:
    _n_features(o, width)
    scale = _vector(o, "scale_", width)
    clip = _flag(o, "clip", False)

    def fn(x: np.ndarray) -> np.ndarray:
        x = x / scale
        if clip:
            np.clip(x, np.float64(-1.0), np.float64(1.0), out=x)
        return x

    return fn, width, True


def _simple_imputer(o: Obj, width: int) -> tuple[Fn, int, bool]:
    _n_features(o, width)
    missing = _state(o).get("missing_values")
    if not (isinstance(missing, float) and math.isnan(missing)) or _flag(o, "add_indicator", False):
        raise Unsupported("SimpleImputer other than missing_values=nan without indicator")
    stats = _vector(o, "statistics_", width)
    fill = _state(o).get("_fill_dtype", np.dtype(np.float64))
    if np.isnan(stats).any() or not (isinstance(fill, np.dtype) and fill == np.float64):
        raise Unsupported("SimpleImputer with empty features or a non-float fill")

    def fn(x: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(x), stats, x)

    return fn, width, True


_TRANSFORMS: dict[str, Callable[[Obj, int], tuple[Fn, int, bool]]] = {
    "sklearn.preprocessing._data.StandardScaler": _center_scale("mean_", "with_mean", "scale_", "with_std"),
    "sklearn.preprocessing._data.MinMaxScaler": _min_max_scaler,
    "sklearn.preprocessing._data.MaxAbsScaler": _max_abs_scaler,
    "sklearn.preprocessing._data.RobustScaler": _center_scale("center_", "with_centering", "scale_", "with_scaling"),
    "sklearn.impute._base.SimpleImputer": _simple_imputer,
}


# ---- final estimators: (state, method, width) -> function ------------------------------------------------
def _classes(o: Obj) -> np.ndarray:
    classes = _get(o, "classes_", np.ndarray)
    if classes.ndim != 1 or len(classes) < 2:
        raise Unsupported(f"{o.cls}.classes_")
    return classes


def _linear_regressor(o: Obj, method: str, width: int) -> Fn:
    _n_features(o, width)
    if method != "predict":
        raise Unsupported(f"{o.cls}.{method}")
    coef = _get(o, "coef_", np.ndarray)
    intercept = _state(o).get("intercept_")
    if coef.dtype != np.float64 or coef.shape[-1] != width or coef.ndim > 2:
        raise Unsupported(f"{o.cls}.coef_")
    if not isinstance(intercept, float | np.floating | np.ndarray):
        raise Unsupported(f"{o.cls}.intercept_")
    if coef.ndim == 1:
        return lambda x: x @ coef + intercept
    coef_t = coef.T
    return lambda x: x @ coef_t + intercept


def _logistic_regression(o: Obj, method: str, width: int) -> Fn:
    _n_features(o, width)
    classes = _classes(o)
    coef, intercept = _get(o, "coef_", np.ndarray), _get(o, "intercept_", np.ndarray)
    binary = len(classes) == 2
    if coef.dtype != np.float64 or coef.ndim != 2 or coef.shape != (1 if binary else len(classes), width):
        raise Unsupported("LogisticRegression.coef_")
    if intercept.dtype != np.float64 or intercept.shape != (coef.shape[0],):
        raise Unsupported("LogisticRegression.intercept_")
    coef_t = coef.T

    def decision(x: np.ndarray) -> np.ndarray:
        scores = x @ coef_t + intercept
        return scores.reshape(-1) if scores.shape[1] == 1 else scores

    if method == "predict":

        def predict(x: np.ndarray) -> np.ndarray:
            scores = decision(x)
            indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
            return classes.take(indices, axis=0)

        return predict
    if binary:
        from scipy.special import expit  # scikit-learn's own sigmoid, for identical rounding

        def proba_binary(x: np.ndarray) -> np.ndarray:
            prob = expit(decision(x))
            return np.stack([1 - prob, prob], axis=1)

        return proba_binary

    def softmax(x: np.ndarray) -> np.ndarray:
        scores = decision(x)
        scores -= scores.max(axis=1).reshape(-1, 1)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1).reshape(-1, 1)
        return scores

    return softmax


_NODE_FIELDS = ("left_child", "right_child", "feature", "threshold")


class _Forest:
    """Trees in flat arrays. A small batch walks every tree at once, one level per numpy step; a large one walks
    tree after tree (fewer, longer steps), so time and memory stay within a few times scikit-learn's."""

    WALK_ALL_UP_TO = 20_000
    """Most (tree, row) walks taken together; beyond, tree after tree."""

    def __init__(self, trees: list[Obj], width: int, n_values: int) -> None:
        lefts, rights, features, thresholds, values = [], [], [], [], []
        placed: dict[int, tuple[int, int]] = {}  # id(tree) -> (root offset, depth): a shared tree is stored once
        roots, depths, offset = [], [], 0
        for tree in trees:
            if id(tree) not in placed:
                left, right, feature, threshold, value, depth = self._arrays(tree, width, n_values)
                lefts.append(left + offset)
                rights.append(right + offset)
                features.append(feature)
                thresholds.append(threshold)
                values.append(value)
                placed[id(tree)] = (offset, int(depth))
                offset += len(left)
            root, depth = placed[id(tree)]
            roots.append(root)
            depths.append(depth)
        self.children = np.stack([np.concatenate(lefts), np.concatenate(rights)], axis=1).reshape(-1)
        self.feature = np.concatenate(features)
        self.threshold = np.concatenate(thresholds)
        self.values = np.ascontiguousarray(np.concatenate(values))
        self.roots, self.depths = np.array(roots, dtype=np.intp), depths

    @staticmethod
    def _arrays(tree: Obj, width: int, n_values: int) -> tuple[Any, ...]:
        if tree.cls != TREE or len(tree.args) != 3 or int(tree.args[2]) != 1 or int(tree.args[0]) != width:
            raise Unsupported("a tree that is not single-output over the model's features")
        nodes, value = _get(tree, "nodes", np.ndarray), _get(tree, "values", np.ndarray)
        n = int(_get(tree, "node_count", (int, np.integer)))
        if nodes.dtype.names is None or any(f not in nodes.dtype.names for f in _NODE_FIELDS):
            raise Unsupported("Tree.nodes")
        if nodes.shape != (n,) or value.ndim != 3 or value.shape[:2] != (n, 1) or value.shape[2] < n_values:
            raise Unsupported("Tree.values")
        left, right = nodes["left_child"].astype(np.intp), nodes["right_child"].astype(np.intp)
        feature = nodes["feature"].astype(np.intp)
        leaf = left == -1
        inner = ~leaf
        ids = np.arange(n)
        if (
            (right[leaf] != -1).any()
            or (left[inner] <= ids[inner]).any()  # children come after their parent: every walk ends
            or (right[inner] <= ids[inner]).any()
            or (left[inner] >= n).any()
            or (right[inner] >= n).any()
            or (feature[inner] < 0).any()
            or (feature[inner] >= width).any()
        ):
            raise Unsupported("Tree.nodes: children or features out of range")
        depth = min(int(_get(tree, "max_depth", (int, np.integer))), n)
        return (
            np.where(leaf, ids, left),  # a leaf points at itself
            np.where(leaf, ids, right),
            np.where(leaf, 0, feature),
            nodes["threshold"].astype(np.float64),
            value[:, 0, :n_values],
            depth,
        )

    def _walk(self, x32: np.ndarray, rows: np.ndarray, node: np.ndarray, depth: int) -> np.ndarray:
        """Walk from `node` down at most `depth` levels: `x <= threshold` goes left, as scikit-learn's trees."""
        for _ in range(depth):
            right = x32[rows, self.feature[node]] > self.threshold[node]
            step = self.children[2 * node + right]
            if (step == node).all():  # every walk has reached its leaf
                break
            node = step
        return node

    @staticmethod
    def _float32(x: np.ndarray) -> np.ndarray:
        x32 = x.astype(np.float32)  # scikit-learn's trees compare float32 inputs (an int64 goes straight there)
        if not np.isfinite(x32).all():
            raise NeedsEstimator("a value beyond float32, or NaN")
        return x32

    def tree_values(self, x: np.ndarray) -> np.ndarray:
        """The leaf values of the (only) tree for each row."""
        x32 = self._float32(x)
        start = np.full(x.shape[0], self.roots[0])
        return self.values[self._walk(x32, np.arange(x.shape[0]), start, self.depths[0])]

    def summed(self, x: np.ndarray) -> np.ndarray:
        """Sum of the trees' leaf values from 0.0, tree after tree as scikit-learn adds them (never pairwise)."""
        x32, n = self._float32(x), x.shape[0]
        rows = np.arange(n)
        if n * len(self.roots) <= self.WALK_ALL_UP_TO:
            start = np.repeat(self.roots[:, None], n, axis=1)
            leaves = self._walk(x32, rows, start, max(self.depths))
            return np.cumsum(self.values[leaves], axis=0)[-1] + 0.0  # a cumulative sum adds in order
        total = np.zeros((n, self.values.shape[1]))
        for root, depth in zip(self.roots, self.depths, strict=True):
            total += self.values[self._walk(x32, rows, np.full(n, root), depth)]
        return total


def _tree_model(o: Obj, method: str, width: int) -> Fn:
    _n_features(o, width)
    if int(_state(o).get("n_outputs_", 1)) != 1:
        raise Unsupported(f"{o.cls} with several outputs")
    is_forest = "estimators_" in _state(o)
    members = _get(o, "estimators_", list) if is_forest else [o]
    trees = [_get(m, "tree_", Obj) for m in members]
    classifier = o.cls.endswith("Classifier")
    if not classifier:
        if method != "predict":
            raise Unsupported(f"{o.cls}.{method}")
        forest = _Forest(trees, width, 1)
        if not is_forest:
            return lambda x: forest.tree_values(x)[:, 0]
        n = len(trees)
        return lambda x: forest.summed(x)[:, 0] / n
    classes = _classes(o)
    forest = _Forest(trees, width, len(classes))
    if not is_forest:
        proba: Fn = forest.tree_values
    else:
        n = len(trees)
        proba = lambda x: forest.summed(x) / n  # noqa: E731
    if method == "predict_proba":
        return proba
    return lambda x: classes.take(np.argmax(proba(x), axis=1), axis=0)


_ESTIMATORS: dict[str, Callable[[Obj, str, int], Fn]] = {
    "sklearn.linear_model._logistic.LogisticRegression": _logistic_regression,
    "sklearn.linear_model._base.LinearRegression": _linear_regressor,
    "sklearn.linear_model._ridge.Ridge": _linear_regressor,
    "sklearn.linear_model._coordinate_descent.Lasso": _linear_regressor,
    "sklearn.linear_model._coordinate_descent.ElasticNet": _linear_regressor,
    **{
        f"sklearn.{module}.{name}": _tree_model
        for module, names in (
            ("tree._classes", ("DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier")),
            ("tree._classes", ("ExtraTreeRegressor",)),
            ("ensemble._forest", ("RandomForestClassifier", "RandomForestRegressor")),
            ("ensemble._forest", ("ExtraTreesClassifier", "ExtraTreesRegressor")),
        )
        for name in names
    },
}

CLASSES = {"sklearn.pipeline.Pipeline"} | set(_TRANSFORMS) | set(_ESTIMATORS)
"""Every scikit-learn class a covered model may hold (forests hold their trees' class as a parameter too)."""
