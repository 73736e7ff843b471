"""The seed REST API: health, the job endpoints over a ``JobBackend``, and the inference endpoints, either served
in-process by an ``InferenceService`` (one machine) or forwarded by a proxy router (Kubernetes)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..opslog import OpsLog
from ..schemas import Health
from ..settings import Settings
from ..storage import Storage
from .backend import JobBackend
from .routes import build_job_router, remove_stale_uploads

log = logging.getLogger(__name__)

TITLE = "Qwen3-TTS Fine-Tuning API"
DESCRIPTION = (
    "Fine-tune Qwen3-TTS voices from a dataset zip and synthesize speech with them "
    "(seed-compatible API of voicefinetune)."
)


def make_job_gate(backend: JobBackend) -> Callable[[str], Awaitable[None]]:
    """404 for an unknown job, 409 for a job that is not ready; called first on /infer/{job_id}*."""

    async def job_gate(job_id: str) -> None:
        job = await backend.get(job_id)
        if job is None:
            raise HTTPException(404, f"job {job_id!r} not found")
        if job.status != "ready":
            detail = f"job {job_id!r} is {job.status}, not ready for inference yet"
            if job.status == "failed":
                detail = f"job {job_id!r} failed and cannot serve inference: {job.error}"
            raise HTTPException(409, detail)

    return job_gate


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 whose ``detail`` is one readable line naming each field to fix and the value received (like every other
    error of the API, a string); FastAPI's structured list stays under ``errors``."""
    errors = exc.errors()
    lines = [_error_line(error) for error in errors]
    structured = [{k: v for k, v in error.items() if k in ("loc", "msg", "type", "input")} for error in errors]
    message = "; ".join(lines) or "invalid request"
    return JSONResponse(
        status_code=422, content={"detail": message, "message": message, "errors": _jsonable(structured)}
    )


def _error_line(error: dict[str, Any]) -> str:
    field = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path"))
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    value = error.get("input")
    if error.get("type") != "missing" and isinstance(value, str | int | float) and repr(value) not in message:
        message += f" (got {value!r})"
    return f"{field}: {message}" if field else message


def _jsonable(value: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    try:
        return jsonable_encoder(value)
    except Exception:
        return str(value)


def create_app(
    settings: Settings,
    backend: JobBackend,
    inference_service: Any | None = None,
    inference_proxy: APIRouter | None = None,
) -> FastAPI:
    """The facade. Pass ``inference_service`` (an ``InferenceService``, started and stopped with the app) for the
    one-machine mode, or ``inference_proxy`` (an APIRouter forwarding the inference endpoints) on Kubernetes."""
    upload_dir = settings.data_dir / "uploads"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        remove_stale_uploads(upload_dir)
        if inference_service is not None:
            await inference_service.start()
        await backend.start()
        try:
            yield
        finally:
            await backend.stop()
            if inference_service is not None:
                await inference_service.stop()

    app = FastAPI(title=TITLE, description=DESCRIPTION, version=_version(), lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.state.settings = settings
    app.state.backend = backend

    @app.get("/", response_model=Health, tags=["service"], summary="Health check")
    async def health() -> Health:
        return Health(storage_configured=settings.storage_configured)

    app.include_router(build_job_router(backend, upload_dir, settings.storage_configured))
    if inference_service is not None:
        from ..inference_server import build_router

        app.include_router(build_router(inference_service, job_gate=make_job_gate(backend)))
    if inference_proxy is not None:
        app.include_router(inference_proxy)
    return app


def create_local_app(settings: Settings) -> FastAPI:
    """One machine: local backend (job records on disk, `vft train` children) + the inference server in-process,
    sharing one ops log."""
    from ..inference_server import InferenceService
    from .local_backend import LocalBackend

    storage = Storage(settings)
    opslog = OpsLog(settings.state_dir / "ops.jsonl")
    service = InferenceService(settings, storage, opslog)
    backend = LocalBackend(settings, storage, opslog, service)
    app = create_app(settings, backend, inference_service=service)
    app.state.opslog = opslog
    app.state.inference_service = service
    return app


def create_kubernetes_app(settings: Settings) -> FastAPI:
    """In a cluster: jobs are VoiceFinetune resources, inference calls go to the inference Service."""
    from .kubernetes_backend import KubernetesBackend, inference_proxy_router

    return create_app(settings, KubernetesBackend(settings), inference_proxy=inference_proxy_router(settings))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("voicefinetune")
    except PackageNotFoundError:
        return "0"
