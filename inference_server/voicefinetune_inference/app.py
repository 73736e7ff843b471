"""The standalone inference server (`vft inference`, the Kubernetes Deployment): the router plus health and docs."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from voicefinetune.api_docs import install_docs
from voicefinetune.bodylimit import limit_bodies
from voicefinetune.error_ids import install_internal_error_handler
from voicefinetune.openai_compat import install_openai_http_errors
from voicefinetune.opslog import OpsLog
from voicefinetune.schemas import SERVICE_NAME, Health
from voicefinetune.security import protect
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage
from voicefinetune.validation_errors import install_validation_error_handler
from voicefinetune_inference.routes import build_router
from voicefinetune_inference.serving.service import InferenceService


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    storage = Storage(settings)
    service = InferenceService(settings, storage, OpsLog(settings.state_dir / "ops.jsonl"))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="voicefinetune inference server",
        description="Many fine-tuned Qwen3-TTS voices on one GPU: VRAM and disk LRU caches, request fusion, S3 outputs.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app, settings)
    app.state.service = service
    install_validation_error_handler(app)
    install_internal_error_handler(app)
    install_openai_http_errors(app)
    limit_bodies(app, settings)
    protect(app, settings)  # added last: the key is checked before anything reads the body

    @app.get("/", response_model=Health, tags=["health"])
    async def health() -> Health:
        return Health(service=SERVICE_NAME, status="ok", storage_configured=storage.configured)

    app.include_router(build_router(service))
    return app
