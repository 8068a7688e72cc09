"""Open Inference Protocol (V2) responses: predictions -> output tensors, the requested ones, JSON or binary.

Scalars per row give a tensor [n], equal-length vectors [n, m], dicts one tensor per key. A client names the
outputs it wants in `outputs` (an unknown name is a 422 naming it) and asks for binary data per output
(`parameters.binary_data`) or for all (`parameters.binary_data_output`), as tritonclient does by default.
Neighbours: `v2_binary` encodes the raw data; the V2 router sends what `respond` gives.
"""

from __future__ import annotations

from typing import Any

import orjson

from custom_predictor.contract import Contract
from custom_predictor.errors import invalid
from custom_predictor.kserve_schemas import V2Request
from custom_predictor.protocols.v2_binary import encode, join
from custom_predictor.protocols.v2_datatypes import METADATA_TYPES


def output_names(contract: Contract) -> list[str]:
    """The outputs a typed model declares (in its metadata too); untyped models declare none."""
    if not contract.inputs:
        return []
    return [o.name for o in contract.outputs] or ["predict"]


def metadata_outputs(contract: Contract) -> list[dict[str, Any]]:
    types = {o.name: o.type for o in contract.outputs}
    return [
        {"name": name, "datatype": METADATA_TYPES.get(types.get(name) or "", "BYTES"), "shape": [-1]}
        for name in output_names(contract)
    ]


def check_requested(req: V2Request, known: list[str]) -> None:
    """Refuse requested outputs the model does not give (when it declares them) and extensions not served."""
    for j, out in enumerate(req.outputs or []):
        if known and out.name not in known:
            raise invalid(f"outputs[{j}].name", f"unknown output; the model gives {known}")
        if (out.parameters or {}).get("classification"):
            raise invalid(f"outputs[{j}].parameters.classification", "the classification extension is not served")


def _datatype(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all((isinstance(v, int | float) and not isinstance(v, bool)) or v is None for v in values):
        return "FP64"
    return "BYTES"


def _tensor(name: str, shape: list[int], values: list[Any]) -> dict[str, Any]:
    datatype = _datatype(values)
    if datatype == "BYTES":
        values = [v if isinstance(v, str) else str(v) for v in values]
    return {"name": name, "shape": shape, "datatype": datatype, "data": values}


def v2_outputs(predictions: list[Any], contract: Contract) -> list[dict[str, Any]]:
    """Predictions -> V2 output tensors: scalars [n], vectors [n, m], dicts one tensor per key."""
    n = len(predictions)
    default = contract.outputs[0].name if len(contract.outputs) == 1 else "predict"
    if n and all(isinstance(p, dict) for p in predictions):
        return [_tensor(str(key), [n], [p.get(key) for p in predictions]) for key in predictions[0]]
    if n and all(isinstance(p, list) for p in predictions):
        m = len(predictions[0])
        if all(len(p) == m for p in predictions):
            return [_tensor(default, [n, m], [v for p in predictions for v in p])]
    return [_tensor(default, [n], predictions)]


def respond(req: V2Request, outputs: list[dict[str, Any]], head: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The response body (JSON, or binary when any chosen output asks for it) and its extra headers."""
    wanted = {o.name: o for o in req.outputs or []}
    if wanted:
        missing = [name for name in wanted if name not in {o["name"] for o in outputs}]
        if missing:
            raise invalid("outputs", f"the model gave no output {missing}; it gave {[o['name'] for o in outputs]}")
        outputs = [o for o in outputs if o["name"] in wanted]
    all_binary = bool((req.parameters or {}).get("binary_data_output", False))
    blobs: list[bytes] = []
    for o in outputs:
        asked = wanted.get(o["name"])
        binary = (asked.parameters or {}).get("binary_data", all_binary) if asked else all_binary
        if binary:
            blob = encode(o.pop("data"), o["datatype"])
            o["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
    header = orjson.dumps({**head, "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
    return join(header, blobs) if blobs else (header, {})
