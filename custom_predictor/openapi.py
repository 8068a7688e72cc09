"""The OpenAPI document's pieces that FastAPI cannot derive by itself: the request bodies of routes that read their
body themselves (every data route: one parse and validation of the raw bytes), and the helpers that document a
looser validation type exactly.

`Bodies` adds each such route's `requestBody` (and the component schemas it refers to) when the document is first
asked for, not at startup (wide contracts take tens of ms). `DocumentedAs` validates with one type and documents
another; `tuple_of`, `array`, `union`, `MinItems` and `with_example` build the documented types.
Neighbours: every protocol's `schemas` module; `app` installs `Bodies`; `docs` serves the Swagger page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import BaseModel, Field, GetJsonSchemaHandler, TypeAdapter
from pydantic.json_schema import JsonSchemaValue

REF = "#/components/schemas/{model}"
Build = Callable[[], tuple[dict[str, Any], dict[str, Any]]]
"""() -> (an operation's requestBody, the component schemas it refers to)."""


class Bodies:
    """Documented request bodies by operation id, added to the OpenAPI document when it is built; `security`
    (the schemes and the requirement of a gated operation) is added to every operation in `secured`."""

    def __init__(self) -> None:
        self.builds: dict[str, Build] = {}
        self.secured: set[str] = set()
        self.schemes: dict[str, Any] = {}
        self.requirement: list[dict[str, Any]] = []

    def add(self, operation_id: str, build: Build) -> None:
        self.builds[operation_id] = build

    def secure(self, schemes: dict[str, Any], requirement: list[dict[str, Any]], operation_ids: set[str]) -> None:
        self.schemes, self.requirement, self.secured = schemes, requirement, operation_ids

    def install(self, app: FastAPI) -> None:
        plain = app.openapi

        def openapi() -> dict[str, Any]:
            if app.openapi_schema:
                return app.openapi_schema
            schema = plain()
            components = schema.setdefault("components", {})
            models = components.setdefault("schemas", {})
            for item in schema["paths"].values():
                for operation in item.values():
                    build = self.builds.get(operation.get("operationId"))
                    if build is not None:
                        operation["requestBody"], defs = build()
                        models.update(defs)
                    if operation.get("operationId") in self.secured and self.requirement:
                        operation["security"] = self.requirement
            if self.schemes and self.requirement:
                components["securitySchemes"] = self.schemes
            return schema

        app.openapi = openapi  # type: ignore[method-assign]


def schema_of(type_: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the JSON schema of `type_`, or a $ref to it when it is a model; the component schemas it refers to)."""
    schema = TypeAdapter(type_).json_schema(ref_template=REF)
    defs = schema.pop("$defs", {})
    if isinstance(type_, type) and issubclass(type_, BaseModel):
        defs[type_.__name__] = schema
        schema = {"$ref": REF.format(model=type_.__name__)}
    return schema, defs


def json_body(type_: Any, example: Any = None, **more: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A required JSON requestBody of `type_` with its example (Swagger's 'Try it out' fills it in); `more` are
    other media types' entries."""
    schema, defs = schema_of(type_)
    entry: dict[str, Any] = {"schema": schema}
    if example is not None:
        entry["example"] = example
    return {"required": True, "content": {"application/json": entry, **more}}, defs


class DocumentedAs:
    """Annotation: validate with the annotated (loose) type, document the schema of the type `exact()` returns.

    `exact` runs when the OpenAPI document is first asked for, not at startup (tens of ms for wide contracts)."""

    def __init__(self, exact: Callable[[], Any]) -> None:
        self.exact = exact
        self.core_schema: Any = None

    def __get_pydantic_json_schema__(self, _: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        if self.core_schema is None:  # once: the same component classes in every document
            self.core_schema = TypeAdapter(self.exact()).core_schema
        return handler(self.core_schema)


def one_of(values: tuple[Any, ...]) -> Any:
    from typing import Literal

    return Literal[values]


def tuple_of(types: list[Any]) -> Any:
    """tuple[t1, t2, ...]: a JSON array of exactly these items (`prefixItems`)."""
    return tuple.__class_getitem__(tuple(types))


def array(item: Any, min_length: int, max_length: int) -> Any:
    """list[item] with length bounds: a JSON array (`items`, `minItems`, `maxItems`)."""
    return Annotated[list[item], Field(min_length=min_length, max_length=max_length)]


def union(types: list[Any]) -> Any:
    """t1 | t2 | ...: a JSON `anyOf`."""
    out = types[0]
    for t in types[1:]:
        out = out | t
    return out


class MinItems:
    """Annotation on a tuple type: document its trailing items as optional (`minItems` below the tuple's length)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __get_pydantic_json_schema__(self, core: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = dict(handler(core))
        schema["minItems"] = self.n
        return schema


def with_example(model: Any, example: dict[str, Any]) -> Any:
    """`model` documented with `example` (the body Swagger UI fills in)."""
    model.model_config["json_schema_extra"] = {"examples": [example]}
    model.model_rebuild(force=True)
    return model
