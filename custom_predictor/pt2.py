"""An exported PyTorch program (`torch.export.save`'s `.pt2` archive, MLflow 3's default format for
`mlflow.pytorch`) read and run without torch's export machinery.

`torch.export.load` imports `torch._dynamo` and `torch._inductor` and rebuilds symbolic shapes: about 1.4 s of
a cold start on one core. `read(path, torch)` takes a few milliseconds: it parses the archive's
`models/<name>.json` (the serialized ExportedProgram, schema 8) and its weights and constants (raw
little-endian storages with their sizes, strides and offsets), and returns a `Program` that calls the graph's
`torch.ops.aten` operators in graph order on them, as the module `torch.export.load` builds does.
Only the plain case is read: one 2-D input tensor whose first dimension is the free row count, one tensor out,
every node an aten operator with arguments of the kinds below and none writing a weight or the input (or a
view of them: the program is called many times, from several threads), no pickled payload, no guards. Anything else is
`Unsupported`, with the reason. Nothing in the archive is evaluated, imported or unpickled: operator names are
looked up as attributes of `torch.ops.aten` (those that read or write files refused), weights are copied from
bytes. That is not a sandbox: an aten operator given crafted arguments can still crash the process, as with
`torch.export.load` (which also unpickles); the archive is trusted as a pickle is, and the PyTorch backend
reads it only where pickle deserialization is allowed.
Neighbours: `backends.pytorch` serves with it and checks it against `torch.export.load` in a child process
(`check`); the library's module takes over on a difference and for an `Unsupported` archive.
"""

from __future__ import annotations

import json
import math
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

SCHEMA_MAJOR = 8
"""The ExportedProgram schema this reader knows (torch 2.6 and later write 8)."""

_DTYPES = {
    1: "uint8",
    2: "int8",
    3: "int16",
    4: "int32",
    5: "int64",
    6: "float16",
    7: "float32",
    8: "float64",
    12: "bool",
    13: "bfloat16",
}
_MEMORY_FORMATS = {1: "contiguous_format", 2: "channels_last", 3: "channels_last_3d", 4: "preserve_format"}
_STRIDED = 7
_SPECIAL_FLOATS = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}
_TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")
_SYMBOL = re.compile(r"Symbol\('([A-Za-z_][A-Za-z0-9_]*)', positive=True, integer=True\)")
_MEMBER = re.compile(r"[A-Za-z0-9_.-]+")
_POSITIONAL, _KEYWORD = 1, 2


class Unsupported(Exception):
    """The archive is not one this reader runs (the message says what): `torch.export.load` is the way."""


class _Ref(str):
    """A value of the graph, by name."""


@dataclass(frozen=True)
class _List:
    """A list argument some of whose items are graph values (tensors, sizes)."""

    items: tuple[Any, ...]


@dataclass(frozen=True)
class _Node:
    op: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: tuple[str | None, ...] | str | None  # several names: the op returns a tuple; one: a value


class Program:
    """The graph with its weights: `program(x)` is the output tensor for an input tensor of `rows x width`."""

    def __init__(self, nodes: list[_Node], state: dict[str, Any], input_name: str, output: str, width: int) -> None:
        self.nodes, self.state, self.input_name, self.output, self.width = nodes, state, input_name, output, width

    def __call__(self, x: Any) -> Any:
        env = dict(self.state)
        env[self.input_name] = x
        for node in self.nodes:
            args = [_resolve(a, env) for a in node.args]
            kwargs = {k: _resolve(v, env) for k, v in node.kwargs.items()}
            result = node.op(*args, **kwargs)
            if isinstance(node.outputs, str):
                env[node.outputs] = result
            elif node.outputs is not None:
                for name, value in zip(node.outputs, result, strict=True):
                    if name is not None:
                        env[name] = value
        return env[self.output]


def _resolve(a: Any, env: dict[str, Any]) -> Any:
    if type(a) is _Ref:
        return env[a]
    if type(a) is _List:
        return [env[i] if type(i) is _Ref else i for i in a.items]
    return a


def read(path: Any, torch: Any, *, dtype: str, width: int) -> Program:
    """The program in the archive at `path`, for inputs of `dtype` and `width` columns. Raises Unsupported."""
    try:
        with zipfile.ZipFile(path) as archive:
            return _Reader(archive, torch).program(dtype, width)
    except (zipfile.BadZipFile, OSError) as e:
        raise Unsupported(f"not a readable archive: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:  # RuntimeError: torch
        raise Unsupported(f"unexpected archive content ({e.__class__.__name__}: {str(e)[:200]})") from None


class _Reader:
    def __init__(self, archive: zipfile.ZipFile, torch: Any) -> None:
        self.archive, self.torch = archive, torch
        roots = {n[: -len("archive_format")] for n in archive.namelist() if n.endswith("archive_format")}
        if len(roots) != 1:
            raise Unsupported("not one pt2 archive (archive_format)")
        self.root = roots.pop()
        if self._text("archive_format").strip() != "pt2":
            raise Unsupported("archive_format is not pt2")
        if self._text("byteorder").strip() != "little" or sys.byteorder != "little":
            raise Unsupported("not little-endian")
        models = [n for n in archive.namelist() if n.startswith(self.root + "models/") and n.endswith(".json")]
        if len(models) != 1:
            raise Unsupported(f"{len(models)} programs in the archive, not one")
        self.name = PurePosixPath(models[0]).stem
        self.doc = json.loads(archive.read(models[0]))
        self.storages: dict[tuple[str, str], Any] = {}

    def _text(self, member: str) -> str:
        return self.archive.read(self.root + member).decode()

    def program(self, dtype: str, width: int) -> Program:
        doc = self.doc
        major = (doc.get("schema_version") or {}).get("major")
        if major != SCHEMA_MAJOR:
            raise Unsupported(f"schema version {major}, this reader knows {SCHEMA_MAJOR}")
        if doc.get("guards_code"):
            raise Unsupported("the program has guards")
        module = doc["graph_module"]
        graph, signature = module["graph"], module["signature"]
        state, user = self._inputs(signature["input_specs"])
        output = self._output(signature["output_specs"], graph["outputs"])
        self._check_input(graph["tensor_values"][user], doc.get("range_constraints") or {}, dtype, width)
        self.kept = {*state, user}  # the weights and the input, and views of them: never written
        nodes = [self._node(n) for n in graph["nodes"]]
        return Program(nodes, state, user, output, width)

    # ---- signature ---------------------------------------------------------------------------------------
    def _inputs(self, specs: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
        weights = self._config("weights", f"{self.name}_weights_config.json")
        constants = self._config("constants", f"{self.name}_constants_config.json")
        state: dict[str, Any] = {}
        users: list[str] = []
        for spec in specs:
            ((kind, body),) = spec.items()
            if kind == "user_input":
                users.append(body["arg"]["as_tensor"]["name"])
                continue
            if kind == "parameter":
                fqn, where = body["parameter_name"], weights
            elif kind == "buffer":
                fqn = body["buffer_name"]
                where = weights if fqn in weights[1] else constants
            elif kind == "tensor_constant":
                fqn, where = body["tensor_constant_name"], constants
            else:
                raise Unsupported(f"an input of kind {kind}")
            state[body["arg"]["name"]] = self._tensor(where, fqn)
        if len(users) != 1:
            raise Unsupported(f"{len(users)} user inputs, not one")
        return state, users[0]

    def _output(self, specs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> str:
        kinds = [next(iter(s)) for s in specs]
        if kinds != ["user_output"] or len(outputs) != 1 or "as_tensor" not in outputs[0]:
            raise Unsupported(f"outputs {kinds}, not one tensor")
        name = outputs[0]["as_tensor"]["name"]
        if specs[0]["user_output"]["arg"] != {"as_tensor": {"name": name}}:
            raise Unsupported("the output spec does not name the graph's output")
        return str(name)

    def _check_input(self, meta: dict[str, Any], ranges: dict[str, Any], dtype: str, width: int) -> None:
        """rows x width of `dtype`, the row count free (torch serves 0 and 1 even where the range says 2)."""
        if _DTYPES.get(meta["dtype"]) != dtype:
            raise Unsupported(f"the program takes {_DTYPES.get(meta['dtype'], meta['dtype'])}, not {dtype}")
        sizes = meta["sizes"]
        if len(sizes) != 2 or sizes[1] != {"as_int": width}:
            raise Unsupported(f"the program's input is not rows x {width}")
        match = _SYMBOL.fullmatch(str((sizes[0].get("as_expr") or {}).get("expr_str")))
        bounds = ranges.get(match.group(1)) if match else None
        if not bounds or bounds.get("max_val") is not None or int(bounds.get("min_val", 0)) > 2:
            raise Unsupported("the program's row count is not free (exported without a dynamic batch dimension)")

    # ---- payloads ----------------------------------------------------------------------------------------
    def _config(self, folder: str, file: str) -> tuple[str, dict[str, Any]]:
        member = f"{self.root}data/{folder}/{file}"
        try:
            config = json.loads(self.archive.read(member))["config"]
        except KeyError:
            config = {}
        return folder, config

    def _tensor(self, where: tuple[str, dict[str, Any]], fqn: str) -> Any:
        folder, config = where
        entry = config.get(fqn)
        if entry is None:
            raise Unsupported(f"no payload for {fqn}")
        if entry.get("use_pickle"):
            raise Unsupported(f"{fqn} is pickled")
        meta, file = entry["tensor_meta"], str(entry["path_name"])
        if not _MEMBER.fullmatch(file):
            raise Unsupported(f"payload name {file!r}")
        if meta["device"]["type"] != "cpu" or meta["layout"] != _STRIDED or meta["dtype"] not in _DTYPES:
            raise Unsupported(f"{fqn}: not a strided CPU tensor of a known dtype")
        dtype = getattr(self.torch, _DTYPES[meta["dtype"]])
        sizes, strides = _ints(meta["sizes"]), _ints(meta["strides"])
        offset = _ints([meta["storage_offset"]])[0]
        flat = self._storage(folder, file, dtype)
        if len(sizes) != len(strides) or min([offset, *sizes, *strides], default=0) < 0:
            raise Unsupported(f"{fqn}: sizes {sizes} and strides {strides} do not describe a tensor")
        needed = offset + sum((n - 1) * s for n, s in zip(sizes, strides, strict=True)) + 1 if all(sizes) else 0
        if needed > flat.numel():
            raise Unsupported(f"{fqn}: sizes and strides beyond its {flat.numel()} stored values")
        return self.torch.as_strided(flat, sizes, strides, offset)

    def _storage(self, folder: str, file: str, dtype: Any) -> Any:
        """The file's values as one flat tensor, shared by the tensors that name it (their aliasing is kept)."""
        key = (folder, file)
        if key not in self.storages:
            torch = self.torch
            data = self.archive.read(f"{self.root}data/{folder}/{file}")
            size = torch.empty((), dtype=dtype).element_size()
            if len(data) % size:
                raise Unsupported(f"{file}: {len(data)} bytes are not whole {dtype} values")
            flat = torch.empty(len(data) // size, dtype=dtype)  # torch's allocator: aligned as torch's own
            if data:
                flat.view(torch.uint8).copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            self.storages[key] = flat
        return self.storages[key]

    # ---- nodes -------------------------------------------------------------------------------------------
    def _node(self, node: dict[str, Any]) -> _Node:
        target = str(node["target"])
        match = _TARGET.fullmatch(target)
        if not match:
            raise Unsupported(f"operator {target[:100]} (only torch.ops.aten operators are read)")
        packet = getattr(self.torch.ops.aten, match.group(1), None)
        op = getattr(packet, match.group(2), None) if packet is not None else None
        if op is None:
            raise Unsupported(f"operator {target} is not in this torch")
        if any(a.name == "filename" for a in op._schema.arguments):  # aten::from_file, aten::save
            raise Unsupported(f"operator {target} reads or writes files")
        given = {i["name"]: i for i in node["inputs"]}
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        reads: dict[str, set[str]] = {}  # argument name -> the graph values it reads
        for schema_arg in op._schema.arguments:  # the deserializer's order: the operator's schema
            item = given.pop(schema_arg.name, None)
            if item is None:
                continue
            value = self._argument(item["arg"])
            reads[schema_arg.name] = _refs(value)
            if item.get("kind") == _POSITIONAL and not kwargs:
                args.append(value)
            elif item.get("kind") in (_POSITIONAL, _KEYWORD):
                kwargs[schema_arg.name] = value
            else:
                raise Unsupported(f"{target}: argument {schema_arg.name} of kind {item.get('kind')}")
        if given:
            raise Unsupported(f"{target}: arguments {sorted(given)} are not in its schema")
        outputs = self._outputs(target, node["outputs"])
        self._track_aliases(target, op, reads, outputs)
        return _Node(op, tuple(args), kwargs, outputs)

    def _track_aliases(self, target: str, op: Any, reads: dict[str, set[str]], outputs: Any) -> None:
        """Refuse a node that writes the weights or the input (or a view of them): the program is called many
        times, from several threads; follow views (outputs that alias an argument) to keep that true."""
        kept = self.kept
        touched = {a.name for a in op._schema.arguments if a.alias_info is not None}
        written = {a.name for a in op._schema.arguments if a.alias_info is not None and a.alias_info.is_write}
        if any(reads.get(n, set()) & kept for n in written):
            raise Unsupported(f"{target} writes a weight or the input (in place)")
        view = any(r.alias_info is not None for r in op._schema.returns) or op._schema.name == "aten::_unsafe_view"
        if view and any(reads.get(n, set()) & kept for n in touched):
            names = [outputs] if isinstance(outputs, str) else list(outputs or ())
            self.kept.update(n for n in names if n is not None)

    def _outputs(self, target: str, outputs: list[dict[str, Any]]) -> tuple[str | None, ...] | str | None:
        names: list[str | None] = []
        for out in outputs:
            ((kind, body),) = out.items()
            if kind == "as_tensor":
                names.append(_Ref(body["name"]))
            elif kind == "as_sym_int" and "as_name" in body:
                names.append(_Ref(body["as_name"]))
            elif kind == "as_none":
                names.append(None)
            elif kind == "as_tensors" and len(outputs) == 1:
                return tuple(_Ref(t["name"]) for t in body)
            else:
                raise Unsupported(f"{target}: an output of kind {kind}")
        if len(names) == 1:
            return names[0]
        return tuple(names) if names else None

    def _argument(self, arg: dict[str, Any]) -> Any:
        torch = self.torch
        ((kind, v),) = arg.items()
        if kind == "as_none":
            return None
        if kind in ("as_tensor", "as_optional_tensor"):
            return _Ref(v["name"]) if "name" in v else _tensor_or_none(v)
        if kind == "as_tensors":
            return _List(tuple(_Ref(t["name"]) for t in v))
        if kind == "as_optional_tensors":
            return _List(tuple(_tensor_or_none(t) for t in v))
        if kind in ("as_int", "as_bool", "as_string"):
            if type(v) is not {"as_int": int, "as_bool": bool, "as_string": str}[kind]:
                raise Unsupported(f"{kind} {v!r}")
            return v
        if kind in ("as_ints", "as_bools", "as_strings"):
            want = {"as_ints": int, "as_bools": bool, "as_strings": str}[kind]
            if any(type(i) is not want for i in v):
                raise Unsupported(f"{kind} {v!r}")
            return list(v)
        if kind == "as_float":
            return _float(v)
        if kind == "as_floats":
            return [_float(f) for f in v]
        if kind == "as_sym_int":
            return _sym_int(v)
        if kind == "as_sym_ints":
            return _List(tuple(_sym_int(i) for i in v))
        if kind == "as_scalar_type" and v in _DTYPES:
            return getattr(torch, _DTYPES[v])
        if kind == "as_memory_format" and v in _MEMORY_FORMATS:
            return getattr(torch, _MEMORY_FORMATS[v])
        if kind == "as_layout" and v == _STRIDED:
            return torch.strided
        if kind == "as_device" and v.get("type") == "cpu":
            return torch.device("cpu") if v.get("index") is None else torch.device("cpu", int(v["index"]))
        raise Unsupported(f"an argument of kind {kind}")


def _refs(value: Any) -> set[str]:
    if type(value) is _Ref:
        return {value}
    if type(value) is _List:
        return {i for i in value.items if type(i) is _Ref}
    return set()


def _tensor_or_none(v: dict[str, Any]) -> _Ref | None:
    if "as_tensor" in v:
        return _Ref(v["as_tensor"]["name"])
    if v.get("as_none") is not None:
        return None
    raise Unsupported(f"optional tensor {sorted(v)}")


def _float(v: Any) -> float:
    if isinstance(v, str) and v in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[v]
    if type(v) not in (int, float):
        raise Unsupported(f"as_float {v!r}")
    return float(v)


def _sym_int(v: dict[str, Any]) -> Any:
    if "as_name" in v:
        return _Ref(v["as_name"])
    if type(v.get("as_int")) is int:
        return v["as_int"]
    raise Unsupported(f"size {v!r}")


def _ints(values: list[dict[str, Any]]) -> list[int]:
    out = []
    for v in values:
        if set(v) != {"as_int"} or type(v["as_int"]) is not int:
            raise Unsupported("a symbolic size or stride in a stored tensor")
        out.append(v["as_int"])
    return out
