"""The Open Inference Protocol's binary tensor data extension (Triton's and KServe's), both ways.

A binary request or response is a JSON header of `Inference-Header-Content-Length` bytes followed by the raw
data of each tensor whose `parameters.binary_data_size` is set, in tensor order: numbers little-endian, BOOL one
byte each (0 or 1), BYTES each element a 4-byte little-endian length and its bytes. Without the header the whole
body is JSON, whatever its Content-Type (as Triton and KServe's server read it). Every malformed part is a
`PredictorError` naming the tensor. Neighbours: `codec` calls `split`/`slices`/`decode` on requests and
`encode`/`join` for binary outputs.
"""

from __future__ import annotations

import struct
from typing import Any

from custom_predictor.errors import PredictorError, invalid

HEADER = "inference-header-content-length"
"""The request and response header giving the JSON header's length in bytes."""

NUMPY_TYPES = {
    "BOOL": "|b1",
    "UINT8": "|u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "|i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
"""numpy dtype of each fixed-size datatype, little-endian as the extension specifies (BYTES is apart)."""


def split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) of a request body; all JSON when there is no header length."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        n = -1
    if not 0 <= n <= len(body):
        message = f"Inference-Header-Content-Length must be an integer from 0 to the body's {len(body)} bytes"
        raise PredictorError(400, "invalid_input", message)
    return body[:n], body[n:]


def slices(tail: bytes, sizes: list[Any]) -> list[bytes | None]:
    """Cut the binary tail into each input's data: `sizes[i]` is input i's `binary_data_size` (None: JSON data)."""
    out: list[bytes | None] = []
    offset = 0
    for i, size in enumerate(sizes):
        if size is None:
            out.append(None)
            continue
        loc = f"inputs[{i}].parameters.binary_data_size"
        if type(size) is not int or size < 0:
            raise invalid(loc, "binary_data_size is a number of bytes")
        if offset + size > len(tail):
            raise invalid(loc, f"the body ends {offset + size - len(tail)} bytes before this tensor's binary data")
        out.append(tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        raise invalid("body", f"{len(tail) - offset} bytes follow the last tensor's binary data")
    return out


def decode_data(raw: bytes, datatype: str, count: int, loc: str) -> Any:
    """A tensor's raw data -> a flat numpy array of `count` values (BYTES: of Python `bytes`)."""
    import numpy as np

    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        out[:] = _bytes_elements(raw, count, loc)
        return out
    dtype = np.dtype(NUMPY_TYPES[datatype])
    if len(raw) != count * dtype.itemsize:
        raise invalid(loc, f"{count} {datatype} values are {count * dtype.itemsize} bytes, got {len(raw)}")
    values = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and (values.view(np.uint8) > 1).any():
        raise invalid(loc, "BOOL values are one byte each, 0 or 1")
    return values


def _bytes_elements(raw: bytes, count: int, loc: str) -> list[bytes]:
    out, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise invalid(loc, "a BYTES element's 4-byte length is cut short")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise invalid(loc, "a BYTES element is longer than the data left")
        out.append(raw[offset : offset + length])
        offset += length
    if len(out) != count:
        raise invalid(loc, f"the shape needs {count} BYTES elements, the data holds {len(out)}")
    return out


def encode_data(values: Any, datatype: str) -> bytes:
    """Output values (a flat array, row-major) -> the extension's raw data for `datatype`."""
    if datatype == "BYTES":
        parts = []
        for v in values:
            b = v if isinstance(v, bytes) else str(v).encode()
            parts += [struct.pack("<I", len(b)), b]
        return b"".join(parts)
    import numpy as np

    return np.asarray(values, dtype=NUMPY_TYPES[datatype]).tobytes()


def join(header: bytes, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A binary response body and its headers."""
    return b"".join([header, *blobs]), {"Inference-Header-Content-Length": str(len(header))}
