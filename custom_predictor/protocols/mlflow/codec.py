"""MLflow's scoring protocol's codec, as `mlflow models serve` (3.17) speaks it at `/invocations`: a body -> Columns
(or, untyped, what MLflow's own parsers make of it), a model's output -> `{"predictions": ...}`.

JSON bodies hold exactly one of `dataframe_split`, `dataframe_records`, `instances`, `inputs` (records, arrays of
values in input order, or columns), plus optional `params`; CSV bodies have a header row. Columns the model does
not take are ignored and nulls of optional inputs left out, as pyfunc does; everything else is validated
against the contract with the field's path in the message (`dataframe_split.data[2][1]: ...`). Responses are
`{"predictions": ...}` with DataFrames as records; errors are MLflow's `{"error_code", "message"}` with its
statuses (400 for bad input and for a model that raises, 415 for other media types). No pandas here: typed
models are served without it. An untyped model gets MLflow's own parsers (`untyped_input`), so it sees exactly
what `mlflow models serve` would give it. Neighbours: `router`; KServe V1's codec reads untyped `instances` here.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
from starlette.responses import Response

from custom_predictor import jsonbody
from custom_predictor.columns import Columns, Locate
from custom_predictor.contract import Contract
from custom_predictor.errors import PredictorError, json_response
from custom_predictor.schemas import Schemas

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
REQUIRED = f"The input must be a JSON dictionary with exactly one of the input fields {set(FORMATS)}"
MEDIA_TYPES = ["text/csv", "application/json"]
MODEL_FAILED = (
    "Encountered an unexpected error while evaluating the model. Verify that the serialized input Dataframe is "
    "compatible with the model for inference."
)
_CODES = {
    "invalid_input": (400, "INVALID_PARAMETER_VALUE"),
    "invalid_json": (400, "BAD_REQUEST"),
    "bad_request": (400, "BAD_REQUEST"),
    "model_error": (400, "BAD_REQUEST"),
    "model_rejected_input": (400, "BAD_REQUEST"),
    "not_ready": (503, "TEMPORARILY_UNAVAILABLE"),
    "not_found": (404, "RESOURCE_DOES_NOT_EXIST"),
    "too_large": (413, "BAD_REQUEST"),
    "timeout": (408, "BAD_REQUEST"),
    "busy": (503, "TEMPORARILY_UNAVAILABLE"),
    "unauthenticated": (401, "UNAUTHENTICATED"),
    "forbidden": (403, "PERMISSION_DENIED"),
    "auth_unavailable": (503, "TEMPORARILY_UNAVAILABLE"),
}


def bad_request(message: str) -> PredictorError:
    return PredictorError(400, "invalid_json", message)


def malformed(loc: str, msg: str) -> PredictorError:
    """The body's structure is not one MLflow reads (its BAD_REQUEST), at `loc`."""
    return PredictorError(400, "bad_request", "Invalid input", [{"loc": loc, "msg": msg, "type": "value_error"}])


def render(e: PredictorError) -> Response:
    """A refusal in MLflow's shape (`details` added: the field paths)."""
    if e.code == "unsupported_media_type":
        return Response(e.message, status_code=415, media_type="text/plain")
    status, code = _CODES.get(e.code, (500, "INTERNAL_ERROR"))
    message = MODEL_FAILED if e.code in ("model_error", "model_rejected_input") else e.message
    if e.details:
        message += "".join(f"\n{d['loc']}: {d['msg']}" for d in e.details[:10])
    return json_response({"error_code": code, "message": message, "details": e.details}, status, e.headers)


def media_type(content_type: str | None) -> str:
    """`json` or `csv` for a Content-Type (none: JSON); other types and parameters are a 415, as in MLflow."""
    if content_type is None:
        return "json"
    mime, *parts = [p.strip() for p in content_type.split(";")]
    params = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in parts if p)}
    if params.get("charset", "utf-8").lower() != "utf-8":
        raise PredictorError(415, "unsupported_media_type", "The scoring server only supports UTF-8")
    if set(params) - {"charset"}:
        unknown = ", ".join(sorted(set(params) - {"charset"}))
        raise PredictorError(415, "unsupported_media_type", f"Unrecognized content type parameters: {unknown}.")
    if mime.lower() not in MEDIA_TYPES:
        message = f"This predictor only supports the following content types: Types: {MEDIA_TYPES}. Got '{mime}'."
        raise PredictorError(415, "unsupported_media_type", message)
    return "csv" if mime.lower() == "text/csv" else "json"


def decode(schemas: Schemas, kind: str, body: bytes) -> tuple[Any, dict[str, Any] | None]:
    """A body of media `kind` (json or csv) -> (Columns, params); untyped: (what MLflow makes of it, params)."""
    if not schemas.typed:
        return untyped_input(kind, body, schemas.max_values)
    contract, params = schemas.contract, None
    if kind == "csv":
        rows, locate = csv_rows(body, contract, schemas.max_records)
        where = "csv"
    else:
        where, data, params = split_json(body, schemas.max_values)
        if isinstance(data, dict) and where == "dataframe_split":
            jsonbody.bound_rows(data.get("data"), f"{where}.data", schemas.max_records, None, 400)
        elif isinstance(data, dict):  # columns: name -> values
            for name, values in data.items():
                jsonbody.bound_rows(values, f"{where}.{name}", schemas.max_records, None, 400)
        else:
            jsonbody.bound_rows(data, where, schemas.max_records, None, 400)
        rows, locate = json_rows(where, data, contract)
    columns: Columns = schemas.validate_rows(keep_inputs(rows, contract), where, locate, status=400)
    return columns, params


def split_json(body: bytes, max_values: int | None = None) -> tuple[str, Any, dict[str, Any] | None]:
    """A JSON body -> (its format, the data under it, params)."""
    try:
        obj = jsonbody.load(body, max_values)
    except PredictorError as e:
        if e.code != "invalid_json":
            raise
        raise bad_request("Invalid input. Ensure that input is a valid JSON formatted string.") from None
    if not isinstance(obj, dict):
        raise bad_request(f"Invalid input. {REQUIRED}. Received {'a list' if isinstance(obj, list) else 'a value'}.")
    found = [k for k in FORMATS if k in obj]
    if len(found) != 1:
        raise bad_request(f"{REQUIRED}. Received dictionary with input fields: {list(obj)}.")
    params = obj.get("params")
    if params is not None and not isinstance(params, dict):
        raise malformed("params", "params must be a dictionary")
    return found[0], obj[found[0]], params


def _records(rows: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise malformed(where, "a list of records (objects: input name -> value)")
    return rows


def _positional(rows: list[Any], names: list[str], where: str) -> list[dict[str, Any]]:
    out = []
    for r, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(names):
            raise malformed(f"{where}[{r}]", f"expected {len(names)} values in the order {names}")
        out.append(dict(zip(names, row, strict=True)))
    return out


def json_rows(fmt: str, data: Any, contract: Contract) -> tuple[list[dict[str, Any]], Locate]:
    """The rows of a JSON body's data, and where each row value sits in it."""
    names = contract.input_names
    if fmt == "dataframe_split":
        if not isinstance(data, dict) or "data" not in data or set(data) - {"columns", "data", "index"}:
            message = "Dataframe split format must have 'data' field and optionally 'columns' and 'index' fields."
            raise malformed(fmt, message)
        columns = data.get("columns") or names
        if not isinstance(columns, list) or len({str(c) for c in columns}) != len(columns):
            raise malformed(f"{fmt}.columns", "a list of distinct column names")
        columns = [str(c) for c in columns]
        values = data["data"] if isinstance(data["data"], list) else [None]
        return _positional(values, columns, f"{fmt}.data"), _locate(f"{fmt}.data", "[{r}]", columns)
    if fmt == "dataframe_records":
        return _records(data, fmt), _locate(fmt, "[{r}]", None)
    if isinstance(data, dict):  # columns: name -> values
        lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise malformed(fmt, "columns (name -> list of values) of the same length")
        rows = [{k: v[r] for k, v in data.items()} for r in range(lengths.pop())]
        return rows, lambda loc: _where(loc, lambda r, f: f"{fmt}.{f}[{r}]")
    if isinstance(data, list) and data and all(isinstance(r, list) for r in data):
        return _positional(data, names, fmt), _locate(fmt, "[{r}]", names)
    if isinstance(data, list) and len(names) == 1 and not any(isinstance(r, dict | list) for r in data):
        return [{names[0]: v} for v in data], lambda loc: _where(loc, lambda r, f: f"{fmt}[{r}]")
    return _records(data, fmt), _locate(fmt, "[{r}]", None)


def _locate(prefix: str, row: str, columns: list[str] | None) -> Locate:
    """`prefix[r].field` for records, `prefix[r][c]` for arrays of values in `columns` order."""

    def path(r: int, field: Any) -> str:
        at = prefix + row.format(r=r)
        if columns is None:
            return f"{at}.{field}"
        return f"{at}[{columns.index(field)}]" if field in columns else f"{at} ({field})"

    return lambda loc: _where(loc, path)


def _where(loc: list[Any], path: Any) -> str:
    row, field = [*loc, None, None][:2]
    return str(path(row, field)) if isinstance(row, int) else "body"


def keep_inputs(rows: list[dict[str, Any]], contract: Contract) -> list[dict[str, Any]]:
    """Columns the model does not take are ignored, nulls of optional inputs are left out (pyfunc does both)."""
    known = {s.name for s in contract.inputs}
    optional = {s.name for s in contract.inputs if not s.required}
    return [{k: v for k, v in r.items() if k in known and not (v is None and k in optional)} for r in rows]


def csv_rows(body: bytes, contract: Contract, max_rows: int) -> tuple[list[dict[str, Any]], Locate]:
    """A CSV body (header row, then one row per line, at most `max_rows`) -> rows, each cell read as its input's
    type."""
    if len(body) > max_rows and jsonbody.occurrences(body, "\n") > max_rows + 1:  # quoted breaks: over-counted
        raise malformed("csv", f"at most {max_rows} rows per request")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise bad_request("Invalid input. Ensure that input is a valid UTF-8 encoded string.") from None
    lines = list(csv.reader(io.StringIO(text)))
    if not lines or not lines[0]:
        raise bad_request("Failed to parse input as a Pandas DataFrame: no columns to parse from the CSV header.")
    header, kinds = lines[0], {s.name: s.type for s in contract.inputs}
    rows = []
    for n, cells in enumerate(lines[1:], start=2):
        if len(cells) != len(header):
            raise malformed(f"csv line {n}", f"{len(cells)} cells for {len(header)} columns")
        row = {}
        for name, cell in zip(header, cells, strict=True):
            if name in kinds and cell != "":
                row[name] = _cell(kinds[name], cell, f"csv line {n}, column {name}")
        rows.append(row)
    return rows, lambda loc: _where(loc, lambda r, f: f"csv line {r + 2}, column {f}")


def _cell(kind: str, cell: str, where: str) -> Any:
    try:
        if kind == "integer":
            value = float(cell) if "." in cell or "e" in cell.lower() else int(cell)
            return int(value) if isinstance(value, float) and value.is_integer() else value
        if kind == "double":
            return float(cell)
        if kind == "boolean":
            return {"true": True, "false": False}[cell.strip().lower()]
    except (ValueError, KeyError, OverflowError):
        raise malformed(where, f"not a {kind}") from None
    return cell


def predictions(raw: Any) -> Response:
    """`{"predictions": ...}` as MLflow writes it: DataFrames and Series as records, arrays as lists."""
    if hasattr(raw, "to_frame") and not hasattr(raw, "columns"):  # Series
        raw = raw.to_frame()
    if hasattr(raw, "to_dict") and hasattr(raw, "columns"):  # DataFrame
        raw = raw.to_dict(orient="records")
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    return Response(orjson.dumps({"predictions": raw}, option=option, default=str), media_type="application/json")


def untyped_input(kind: str, body: bytes, max_values: int | None = None) -> tuple[Any, dict[str, Any] | None]:
    """For a model without signature: MLflow's own parsing of a body (no schema to apply), and its params."""
    from mlflow.pyfunc.scoring_server import parse_csv_input

    if kind == "csv":
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise bad_request("Invalid input. Ensure that input is a valid UTF-8 encoded string.") from None
        return _mlflow_parse(lambda: parse_csv_input(io.StringIO(text))), None
    fmt, data, params = split_json(body, max_values)
    return untyped_data(fmt, data), params


def untyped_data(fmt: str, data: Any) -> Any:
    """`{fmt: data}` as `mlflow models serve` hands it to a model without signature (DataFrame or array)."""
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    return _mlflow_parse(lambda: infer_and_parse_data({fmt: data}))


def _mlflow_parse(parse: Any) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return parse()
    except MlflowException as e:
        code = "invalid_json" if e.error_code == "BAD_REQUEST" else "invalid_input"
        raise PredictorError(400, code, e.message.splitlines()[0][:300]) from None
