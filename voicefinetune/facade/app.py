"""The REST API: health, the job endpoints over a ``JobBackend``, and the inference endpoints, either served
in-process by the inference server (one machine, composed in ``voicefinetune.serve``) or forwarded to the
inference replicas (Kubernetes)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

from fastapi import APIRouter, FastAPI, HTTPException

from ..api_docs import install_docs
from ..bodylimit import limit_bodies
from ..error_ids import install_internal_error_handler
from ..lifecycle import FAILED, READY, JobGate
from ..openai_compat import install_openai_http_errors
from ..schemas import Health
from ..security import protect
from ..settings import Settings
from ..validation_errors import install_validation_error_handler
from .backend import JobBackend
from .routes import FINETUNE_PATH, build_job_router, path_job_id, remove_stale_uploads

if TYPE_CHECKING:
    from .inference_proxy import VoiceKeys

log = logging.getLogger(__name__)

TITLE = "Qwen3-TTS Fine-Tuning API"
DESCRIPTION = (
    "Fine-tune Qwen3-TTS voices from a dataset zip and synthesize speech with them "
    "(upstream-compatible API of voicefinetune)."
)


def make_job_gate(backend: JobBackend) -> JobGate:
    """400 for an id no job can have, 404 for an unknown job, 409 for a job that is not ready; called first on
    /infer/{job_id}*."""

    async def job_gate(job_id: str) -> None:
        job = await backend.get(path_job_id(job_id))
        if job is None:
            raise HTTPException(404, f"job {job_id!r} not found")
        if job.status != READY:
            detail = f"job {job_id!r} is {job.status}, not ready for inference yet"
            if job.status == FAILED:
                detail = f"job {job_id!r} failed and cannot serve inference: {job.error}"
            raise HTTPException(409, detail)

    return job_gate


class InferenceMount(Protocol):
    """How the inference endpoints join the app: served in-process by the inference server (one machine, see
    ``voicefinetune.serve``) or forwarded to the inference replicas (Kubernetes)."""

    def router(self, job_gate: JobGate) -> APIRouter: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def create_app(settings: Settings, backend: JobBackend, inference: InferenceMount) -> FastAPI:
    """The facade: health, the job endpoints over ``backend`` and the inference endpoints of ``inference``, which
    gets the job gate over this backend and starts before the backend and stops after it."""
    upload_dir = settings.data_dir / "uploads"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        remove_stale_uploads(upload_dir)
        await inference.start()
        await backend.start()
        try:
            yield
        finally:
            await backend.stop()
            await inference.stop()

    app = FastAPI(
        title=TITLE,
        description=DESCRIPTION,
        version=_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app, settings)
    install_validation_error_handler(app)
    install_internal_error_handler(app)
    install_openai_http_errors(app)
    limit_bodies(app, settings, upload_paths={FINETUNE_PATH})
    protect(app, settings)  # added last: the key is checked before anything reads the body
    app.state.settings = settings
    app.state.backend = backend

    @app.get("/", response_model=Health, tags=["service"], summary="Health check")
    async def health() -> Health:
        return Health(storage_configured=settings.storage_configured)

    app.include_router(
        build_job_router(
            backend, upload_dir, settings.storage_configured, max_upload_bytes=settings.max_upload_bytes
        )
    )
    app.include_router(inference.router(make_job_gate(backend)))
    return app


class ForwardedInference:
    """The inference endpoints of a cluster: forwarded to the inference replicas (nothing to start here);
    ``voice_keys``: a voice's rendezvous key (default: its id)."""

    def __init__(self, settings: Settings, voice_keys: VoiceKeys | None = None):
        self.settings = settings
        self.voice_keys = voice_keys

    def router(self, job_gate: JobGate) -> APIRouter:
        from .inference_proxy import inference_proxy_router, own_key

        return inference_proxy_router(self.settings, job_gate, self.voice_keys or own_key)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def create_kubernetes_app(settings: Settings, kubeconfig: str | None = None) -> FastAPI:
    """In a cluster: jobs are VoiceFinetune resources, inference calls go to the inference Service, each voice to
    the replica its resource's recorded routing key names."""
    from .kubernetes_backend import KubernetesBackend

    backend = KubernetesBackend(settings, kubeconfig)
    return create_app(settings, backend, ForwardedInference(settings, backend.routing_key))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("voicefinetune")
    except PackageNotFoundError:
        return "0"
