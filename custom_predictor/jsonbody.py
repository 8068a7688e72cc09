"""JSON request bodies, read so that no body costs more than a small multiple of its size nor holds the GIL for
long: the values in the body are counted first (its commas and brackets, by numpy without the GIL) and a body
holding more than the model's rows can is refused unparsed; orjson then parses the raw bytes (C, no per-error
objects), the structure's sizes are bounded before anything validates it (rows per request, fields per row,
string lengths), and pydantic validates what is left, stopping at the first bad row. A small body (`SMALL`) is
validated straight from its bytes.

A body shaped to hurt (a million keys in one object, millions of empty arrays, a record list far over the row
limit) is refused with one error, instead of being parsed into millions of objects (orjson takes 108 ms per MiB
of empty arrays, holding the GIL, so the event loop and its probes wait) or pydantic building one error object
per offending element (one 16 MB body of extra keys cost 1.2 GB and seconds of CPU). Peak memory per protocol:
docs/predictor.md.
Neighbours: every protocol's codec; `errors` renders the refusals.
"""

from __future__ import annotations

from typing import Any

import orjson

from custom_predictor.errors import PredictorError, invalid

EXTRA_FIELDS = 16
"""Fields a row may carry beyond the model's inputs and still be validated field by field (each extra one is then
its own error); a row with more is refused as a whole."""


UNTYPED_WIDTH = 64
"""For a model that declares no inputs: the values a row may hold, for the count of values a body may have."""


def values_limit(inputs: int, max_rows: int) -> int:
    """The JSON values (scalars, arrays, objects) a body of at most `max_rows` rows of `inputs` values may hold:
    each row's values and its own array or object, and some slack for the envelope."""
    return max_rows * ((inputs or UNTYPED_WIDTH) + EXTRA_FIELDS + 1) + 1024


def load(body: bytes, max_values: int | None = None) -> Any:
    """The parsed body; 400 `invalid_json` when it is not JSON, 413 `too_large` when it holds more than
    `max_values` values (counted by their separators and openings, strings included: an over-count only)."""
    if max_values is not None and len(body) > max_values:
        count = _values(body, max_values)
        if count > max_values:
            message = f"the request body holds over {max_values} JSON values, more than this model's rows can"
            raise PredictorError(413, "too_large", message)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PredictorError(400, "invalid_json", "the request body is not valid JSON") from None


def _values(body: bytes, limit: int) -> int:
    """Commas, then (if still within `limit`) array and object openings."""
    count = occurrences(body, ",")
    if count <= limit:
        count += occurrences(body, "[") + occurrences(body, "{")
    return count


def occurrences(body: bytes, char: str) -> int:
    """How often `char` occurs in `body`: with numpy, whose loops let go of the GIL, so the event loop answers
    meanwhile (`bytes.count` holds it: 8 ms on 16 MiB)."""
    import numpy as np

    return int(np.count_nonzero(np.frombuffer(body, dtype=np.uint8) == ord(char)))


SMALL = 64 * 1024
"""A body up to this size is validated straight from its bytes: nothing in it can cost much."""
MAX_STRING = 10_000
"""The longest string an input takes (the contract's string inputs); a longer one is refused before validation."""


def bound_rows(rows: Any, where: str, max_rows: int, max_fields: int | None, status: int = 422) -> None:
    """Refuse a list of rows (objects or arrays) longer than `max_rows`, a row with more than `max_fields`
    fields, or a value that is a string longer than any input takes; anything else is left for validation."""
    if not isinstance(rows, list):
        return
    if len(rows) > max_rows:
        raise invalid(where, f"at most {max_rows} rows per request", "too_long", status)
    for n, row in enumerate(rows):
        if not isinstance(row, dict | list):
            continue
        if max_fields is not None and len(row) > max_fields:
            message = f"at most {max_fields} fields per row (the model's inputs)"
            raise invalid(f"{where}[{n}]", message, "too_long", status)
        for value in row.values() if isinstance(row, dict) else row:
            if type(value) is str and len(value) > MAX_STRING:
                message = f"String should have at most {MAX_STRING} characters"
                raise invalid(f"{where}[{n}]", message, "string_too_long", status)
