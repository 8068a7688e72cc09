"""Read a scikit-learn model file (skops, pickle, cloudpickle) into plain data, without importing scikit-learn.

An estimator becomes an `Obj`: its class path, its state (the attributes pickle or skops stored) and, for
objects rebuilt by a constructor call (a tree's `Tree(n_features, n_classes, n_outputs)`), the arguments.
Nothing in the file is executed or imported: skops' schema is JSON plus `.npy` arrays read with
`allow_pickle=False`; pickles go through an unpickler whose only real callables are numpy's array and dtype
constructors, and every other global becomes an inert placeholder. What the reader cannot represent becomes
`Unsupported`, which `kernels` refuses to compile.
Neighbours: `kernels` compiles the result into numpy code; `runtime` decides when to use it.
"""

from __future__ import annotations

import importlib
import io
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class ModelFileError(Exception):
    """The file is not a model file this reader understands."""


@dataclass
class Obj:
    """An object from the file: `cls` is `module.Class`; `state` what `__setstate__` would receive."""

    cls: str
    state: Any = field(default_factory=dict)
    args: tuple[Any, ...] = ()

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD
        self.state = state


@dataclass(frozen=True)
class Unsupported:
    """Something the reader does not represent (a function, a type, a set...): kernels refuse it."""

    what: str


TREE = "sklearn.tree._tree.Tree"
_BUILTINS = {f"builtins.{t}" for t in ("dict", "list", "tuple", "str", "int", "float", "bool")}
_SKOPS_TRUSTED = _BUILTINS | {"collections.OrderedDict", "collections.defaultdict", "numpy.ndarray"}
"""Types skops trusts without being told (besides scikit-learn's estimators and numpy's scalar types)."""
_NUMPY_SCALARS = {f"numpy.{t.__name__}" for t in set(np.sctypeDict.values())}
"""numpy's scalar types (numpy.int64, ...): skops trusts them as values and as a dict's key types."""


def read(path: Path, serialization_format: str, trusted: list[str] | None, estimators: set[str] | None) -> Any:
    """The model in `path` as plain data.

    For skops, `trusted` is the MLmodel's `skops_trusted_types` and `estimators` the scikit-learn classes
    the caller may meet (all of which skops trusts by default): a file holding any other type is refused,
    as skops would refuse it (a Tree, for one, must be listed in `trusted`). `estimators=None` reads any type
    (for reading attributes only: nothing in the file runs either way).
    """
    if serialization_format == "skops":
        return read_skops(path, None if estimators is None else _SKOPS_TRUSTED | estimators | set(trusted or []))
    if serialization_format in ("pickle", "cloudpickle"):
        return read_pickle(path)
    raise ModelFileError(f"unknown serialization format {serialization_format!r}")


# ---- skops -------------------------------------------------------------------------------------------------
def read_skops(path: Path, trusted: set[str] | None) -> Any:
    """skops protocol 2 (skops >= 0.10); every type in the file must be in `trusted` (unless None) or a numpy
    scalar."""
    try:
        with zipfile.ZipFile(path) as zf:
            schema = json.loads(zf.read("schema.json"))
            if schema.get("protocol") != 2:
                raise ModelFileError(f"skops protocol {schema.get('protocol')!r} is not supported")
            reader = _SkopsReader(zf)
            obj = reader.node(schema)
    except ModelFileError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a damaged or crafted file causes (MemoryError too)
        raise ModelFileError(f"cannot read {path.name}: {e.__class__.__name__}") from None
    untrusted = [] if trusted is None else sorted(reader.types - trusted)
    if untrusted:
        raise ModelFileError(f"{path.name} holds types skops does not trust by default: {', '.join(untrusted)}")
    return obj


class _SkopsReader:
    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.memo: dict[int, Any] = {}
        self.types: set[str] = set()

    def node(self, state: Any) -> Any:
        if not isinstance(state, dict) or "__loader__" not in state:
            raise ModelFileError("malformed skops schema")
        saved_id = state.get("__id__")
        if saved_id is not None and saved_id in self.memo:  # skops: a seen id is the same object
            return self.memo[saved_id]
        value = self._build(state)
        if saved_id is not None and state["__loader__"] != "CachedNode":
            self.memo[saved_id] = value
        return value

    def _build(self, state: dict[str, Any]) -> Any:
        loader = state["__loader__"]
        path = f"{state.get('__module__')}.{state.get('__class__')}"
        if loader not in ("JsonNode", "CachedNode", "NdArrayNode") and not (
            loader == "TypeNode" and path in _NUMPY_SCALARS
        ):
            self.types.add(path)
        if loader == "JsonNode":
            return json.loads(state["content"])
        if loader == "DictNode":
            keys = [self.node(k) for k in state["key_types"]["content"]]
            items = list(state["content"].items())
            if len(keys) != len(items):
                raise ModelFileError("malformed skops DictNode")
            ints = {"builtins.int"} | {n for n in _NUMPY_SCALARS if "int" in n}
            return {(int(k) if t in ints else k): self.node(v) for t, (k, v) in zip(keys, items, strict=True)}
        if loader == "DefaultDictNode":  # as a plain dict: what its items say, without the default factory
            self.node(state["content"]["default_factory"])  # its type is checked all the same
            return self.node(state["content"]["main"])
        if loader in ("ListNode", "TupleNode"):
            items = [self.node(v) for v in state["content"]]
            return items if loader == "ListNode" else tuple(items)
        if loader == "NdArrayNode":
            return self._array(state, path)
        if loader == "DTypeNode":  # stored as an empty array of that dtype
            content = self.node(state["content"])
            return content.dtype if isinstance(content, np.ndarray) else Unsupported(path)
        if loader == "TypeNode":
            return path  # only used as a DictNode key type here
        if loader == "ObjectNode":
            content = state.get("content")
            return Obj(path, self.node(content) if content is not None else {})
        if loader == "TreeNode":
            return Obj(path, self.node(state["content"]), tuple(self.node(state["__reduce__"]["args"])))
        if loader == "CachedNode":
            return self.memo.get(state["__id__"], Unsupported("dangling CachedNode"))
        return Unsupported(f"{loader} {path}")

    def _array(self, state: dict[str, Any], path: str) -> Any:
        if state.get("type") == "numpy":
            array = np.load(io.BytesIO(self.zf.read(state["file"])), allow_pickle=False)
            if path == "numpy.ndarray":
                self.types.add(path)
                return array
            if path.startswith("numpy.") and array.ndim == 0 and array.dtype.name == path.removeprefix("numpy."):
                return array[()]  # a numpy scalar such as numpy.float64 (skops trusts these)
            self.types.add(path)
            return Unsupported(path)
        self.types.add(path)
        if state.get("type") == "json" and path == "numpy.ndarray":
            items = [self.node(v) for v in state["content"]]
            shape = self.node(state["shape"])
            if len(shape) != 1:
                return Unsupported("multi-dimensional object array")
            out = np.empty(len(items), dtype=object)
            out[:] = items
            return out
        return Unsupported(path)


# ---- pickle ------------------------------------------------------------------------------------------------
_NUMPY_GLOBALS = {
    (module, name)
    for core in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{core}.multiarray", "_reconstruct"),
        (f"{core}.multiarray", "scalar"),
        (f"{core}.numeric", "_frombuffer"),
    )
} | {("numpy", "ndarray"), ("numpy", "dtype")}
"""The globals a pickled numpy array, scalar or dtype needs; the only callables the reader really calls."""


class _Placeholder(Obj):
    """Stands for a pickled global: calling it (REDUCE) or `__new__` (NEWOBJ) gives an `Obj` of that class."""

    path = ""

    def __new__(cls, *args: Any, **_: Any) -> Any:
        return Obj(cls.path, {}, tuple(args))


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return getattr(importlib.import_module(module), name)
        return type(name, (_Placeholder,), {"path": f"{module}.{name}"})


def read_pickle(path: Path) -> Any:
    """A pickle or cloudpickle file, read without importing or calling anything outside numpy."""
    try:
        with path.open("rb") as f:
            return _Unpickler(f).load()
    except Exception as e:  # noqa: BLE001 - whatever a damaged or crafted file causes (MemoryError too)
        raise ModelFileError(f"cannot read {path.name}: {e.__class__.__name__}") from None
