"""The FastAPI app: one data plane for the settings' model, one router per protocol over it.

`create_app(settings)` resolves the model and its contract (an invalid contract raises `ContractError`; a
model with neither signature nor contract is served untyped), builds the data plane and the routers
(`protocols`), every data route guarded by the caller dependency (`access`), the `Calls` middleware around them
all, and loads the model in the background once the server runs, so `/v2/health/live` answers at once and
`/v2/health/ready` turns true after the load and the self-test.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.responses import Response

from custom_predictor import access, docs, errors, health, limits
from custom_predictor.auth import Gate
from custom_predictor.backends.declared import declared_inputs
from custom_predictor.calls import Call, Calls, record_of
from custom_predictor.contract import (
    Contract,
    ContractError,
    declared_contract,
    derive_contract,
    example_rows,
    has_signature,
    load_contract,
    load_entities,
    untyped_contract,
)
from custom_predictor.dataplane import DataPlane
from custom_predictor.inference_log import InferenceLog
from custom_predictor.metrics import Metrics
from custom_predictor.openapi import Bodies
from custom_predictor.protocols import mlflow, typed, v1, v2
from custom_predictor.runtime import Runtime
from custom_predictor.schemas import Schemas
from custom_predictor.settings import Settings, service_path_for
from custom_predictor.source import ModelSource, fetch

log = logging.getLogger("custom_predictor")

UNTYPED_NOTE = (
    "**Untyped API.** This model was logged with no signature and no contract, so its inputs are not checked and "
    "the schemas below are free-form: records are rows of the DataFrame given to the model; MLflow's `/invocations` "
    "and the V2 protocol convert as MLflow and KServe do. For a typed API (validated inputs, exact schemas, "
    "examples, KServe V1), log the model with a signature (`signature=infer_signature(X, y)`, or an "
    "`input_example`) or with a contract.yaml (docs/contract.md)."
)


def resolve_contract(source: ModelSource, allow_pickle: bool = True) -> tuple[Contract, dict[Any, dict[str, Any]]]:
    """The model's contract (file, else derived from the signature, else what the model object declares, else
    untyped) and its entity rows."""
    if source.contract_file is not None:
        contract = load_contract(source.contract_file)
        label, base = str(source.contract_file), source.contract_file.parent
    elif not has_signature(source.mlmodel):
        declared = declared_inputs(source.model_dir, source.mlmodel, allow_pickle)
        if declared is None:
            return untyped_contract(), {}
        log.info("no signature: serving the inputs the model declares (%s)", declared[1])
        return declared_contract(declared[0], str(source.model_dir / "MLmodel")), {}
    else:
        contract = derive_contract(source.model_dir, source.mlmodel)
        label, base = str(source.model_dir / "MLmodel"), source.model_dir
    entities = load_entities(contract, base, label) if contract.entity else {}
    return contract, entities


def _description(source: ModelSource, contract: Contract, flavor: str, notes: list[str] | None = None) -> str:
    origins = {
        "contract": "contract.yaml",
        "signature": "derived from the MLflow signature",
        "model": "the input columns the model object declares (logged without signature)",
        "none": "none",
    }
    lines = [
        contract.description or "",
        "",
        f"**Model** `{source.name}` · **version** `{source.version or '-'}` · **run** `{source.run_id or '-'}` "
        f"· **flavor** `{flavor}` · **contract** {origins[contract.source]}",
    ]
    if contract.source == "none":
        lines += ["", UNTYPED_NOTE]
    if notes:
        lines += ["", "**Environment**: this image differs from what the model was logged with:", "", *notes]
    for title, values in (
        ("Params", source.run.get("params")),
        ("Metrics", source.run.get("metrics")),
        ("Tags", source.run.get("tags")),
    ):
        if values:
            lines += ["", f"**{title}**", "", "| name | value |", "|---|---|"]
            lines += [f"| {k} | {str(v).replace('|', '/')[:200]} |" for k, v in sorted(values.items())[:100]]
    return "\n".join(lines).strip()


def _serving_example(source: ModelSource) -> Any:
    """The model's `serving_input_example.json` (an /invocations body MLflow validated at logging), or None."""
    name = (source.mlmodel.get("saved_input_example_info") or {}).get("serving_input_path")
    path = source.model_dir / str(name or "")
    try:
        return json.loads(path.read_text()) if name and path.is_file() else None
    except (OSError, ValueError):
        return None


def _lifespan(
    plane: DataPlane, gate: Gate, flush_seconds: float
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    runtime, metrics = plane.runtime, plane.metrics

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        def load() -> None:
            runtime.load()
            # The model and libraries are long-lived: keep them out of later GC passes (p99). No collect first:
            # after torch it finds ~300 objects in 0.15 s of a held GIL, on the way to the first answer.
            gc.freeze()
            metrics.load_seconds.set(runtime.load_seconds or 0)
            metrics.ready.set(1 if runtime.ready else 0)

        thread = threading.Thread(target=load, name="model-load", daemon=True)
        thread.start()
        await gate.start()
        await plane.log.start()
        yield
        await gate.close()
        await plane.log.stop(flush_seconds)  # the server has drained its requests: every record is in
        runtime.close()
        plane.close()
        await asyncio.to_thread(thread.join, 30)

    return lifespan


def create_app(settings: Settings, source: ModelSource | None = None) -> FastAPI:
    """Build the predictor app for the settings' model. Raises SourceError/ContractError when it cannot."""
    source = source or fetch(settings)
    contract, entities = resolve_contract(source, settings.mlflow_allow_pickle_deserialization)
    path = settings.service_path or service_path_for(source.name)
    runtime = Runtime(
        source.model_dir,
        source.mlmodel,
        contract,
        fast_path=settings.fast_path,
        kernels=settings.kernels,
        verify_kernel=settings.verify_kernel,
        allow_pickle=settings.mlflow_allow_pickle_deserialization,
        requirements_check=settings.requirements_check,
    )
    untyped_rows = [] if contract.inputs else example_rows(source.model_dir, source.mlmodel, [])
    schemas = Schemas(
        contract,
        settings.max_records,
        source.name,
        entity_example=next(iter(entities), None),
        example=untyped_rows[0] if untyped_rows else None,
    )
    metrics = Metrics()
    metrics.record_environment(runtime.findings)
    gate = Gate.from_settings(settings, metrics.registry)
    inference_log = InferenceLog.from_settings(settings, metrics.registry)
    memory = settings.memory_budget_bytes or int(
        settings.memory_budget_share * (limits.container_memory() or limits.physical_memory())
    )
    budget = limits.Budget(memory, settings.budget_wait_seconds)
    plane = DataPlane(
        runtime,
        contract,
        source,
        path,
        metrics,
        entities,
        budget=budget,
        max_body=settings.max_body_bytes,
        log=inference_log,
        threads=settings.predict_threads,
    )
    app = FastAPI(
        title=f"{source.name} (version {source.version or '-'})",
        version=str(source.version or "0"),
        description=_description(source, contract, runtime.flavor, runtime.notes),
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan(plane, gate, settings.inference_log_flush_seconds),
        openapi_url=None,
        default_response_class=Response,
    )
    app.state.runtime, app.state.contract, app.state.service_path, app.state.source = runtime, contract, path, source
    app.state.plane = plane
    errors.install(app)
    bodies = Bodies()
    caller = access.caller(gate if gate.modes else None)
    guard_docs = [caller] if gate.guards_docs else []
    docs.mount_assets(app, path)
    routers = [
        docs.router(app, path, source.name, guard_docs),
        typed.router(plane, schemas, bodies, caller),
        v1.router(plane, schemas, bodies, caller),
        v2.router(plane, schemas, bodies, caller),
        mlflow.router(plane, schemas, bodies, caller, _serving_example(source)),
        health.router(plane, [caller] if gate.guards_metrics else []),
    ]
    for router in routers:
        app.include_router(router)
    schemes, requirement = gate.openapi()
    gated = {getattr(r, "operation_id", None) for r in iter_route_contexts(app.routes) if access.guarded(r)}
    bodies.secure(schemes, requirement, {g for g in gated if g})
    bodies.install(app)
    named = (source.name, source.version, settings.inferenceservice_namespace, settings.inferenceservice_name)
    sampling = inference_log.sampling_fraction

    def on_done(call: Call) -> None:
        if settings.access_log:
            _access_log(call)
        if call.data and inference_log.on:
            inference_log.put(record_of(call, *named, sampling))

    routes = [r for router in routers for r in router.routes]
    app.add_middleware(
        Calls,
        metrics=metrics,
        max_body=settings.max_body_bytes,
        body_timeout=settings.body_timeout_seconds,
        budget=budget,
        routes=routes,
        on_done=on_done,
    )
    return app


def _access_log(call: Call) -> None:
    log.info(
        "%s %s %d %.1fms request_id=%s subject=%s",
        call.method,
        call.path,
        call.status,
        call.latency_ms,
        call.request_id,
        call.subject or "-",
    )


__all__ = ["ContractError", "create_app", "resolve_contract"]
