"""The inference endpoints (the original service's, plus voice registration) as an `APIRouter` over the parts of an
`InferenceService` (each route calls the part that does its work).

``job_gate(job_id)`` is awaited first on ``/infer`` routes; it may raise HTTPException (the facade answers 409 for
a job still training). Every error is answered with ``{"detail": message}`` and the status the original service names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from voicefinetune.lifecycle import JobGate
from voicefinetune.metrics import exposition
from voicefinetune.opslog import OpsLog
from voicefinetune.schemas import (
    BatchInferRequest,
    BatchItemError,
    GPUConfig,
    GPUStatus,
    InferRequest,
    InferS3Response,
    InlineAudioResponse,
    OpAverage,
    StorageFile,
    StorageList,
    StorageStatus,
    VoiceCloneBatchRequest,
    VoiceCloneRequest,
    VoiceDesignRequest,
)
from voicefinetune.storage import build_key
from voicefinetune_inference import metrics
from voicefinetune_inference.caches.voices import check_voice_id
from voicefinetune_inference.chapters.routes import add_chapter_routes, chapter_lifespan
from voicefinetune_inference.chapters.worker import ChapterWorker
from voicefinetune_inference.errors import ServerBusy, message_for, status_for
from voicefinetune_inference.openai_api.routes import add_openai_routes
from voicefinetune_inference.serving.service import InferenceService

log = logging.getLogger(__name__)

WAV_MEDIA_TYPE = "audio/wav"
AUDIO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {WAV_MEDIA_TYPE: {}},
        "description": "The WAV (24 kHz, 16-bit) when not uploading, else the S3 object (JSON)",
    }
}


class VoiceRegistration(BaseModel):
    speaker_name: str = Field(
        description="Speaker name inside the fine-tuned checkpoint (vft train --speaker-name)"
    )
    checkpoint_path: str | None = Field(
        None,
        description="Model folder inside the job's own folder, relative to VFT_DATA_DIR, e.g. "
        "jobs/{job_id}/output/checkpoint-epoch-9. Default: the newest jobs/{job_id}/output/checkpoint-epoch-N",
    )
    s3_prefix: str | None = Field(
        None,
        description="S3 prefix holding the same folder (restored from there when the disk LRU deleted it): the "
        "job's own checkpoints/{job_id} or a prefix under it. Default: checkpoints/{job_id} when only S3 has the model",
    )
    preload: bool = Field(
        False, description="Load the model into memory before answering; if that fails, nothing is registered"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "speaker_name": "hero_voice",
                    "checkpoint_path": "jobs/hero1/output/checkpoint-epoch-9",
                    "s3_prefix": "checkpoints/hero1",
                    "preload": True,
                }
            ]
        }
    }


REGISTER_HELP = """Make the model trained for `job_id` servable at `/infer/{job_id}` (replacing an earlier registration).
`vft serve` does this itself when a training ends, and the operator in Kubernetes; call it to serve a checkpoint made
with `vft train --job-id ID ...`: `{"speaker_name": NAME}` finds the trainer's output folder by itself.
Answers 400 for a bad job id or no checkpoint, 409 (with `preload`) when the checkpoint has no such speaker."""


class VoiceInfo(BaseModel):
    job_id: str
    speaker_name: str
    checkpoint_path: str | None
    s3_prefix: str | None
    local_path: str
    on_disk: bool
    loaded: bool
    registered_at: float
    last_used: float | None


class TimedRoute(APIRoute):
    """Records each request's latency under its route template (kept when the router is included elsewhere)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        method = next(iter(self.methods or ()), "GET")
        endpoint = self.path

        async def timed(request: Request) -> Response:
            started = time.monotonic()
            status = 500
            try:
                response = await handler(request)
                status = response.status_code
                return response
            except HTTPException as exc:
                status = exc.status_code
                raise
            except RequestValidationError:
                status = 422
                raise
            finally:
                metrics.REQUEST_SECONDS.labels(method, endpoint, str(status)).observe(
                    time.monotonic() - started
                )

        return timed


def http_error(exc: Exception) -> HTTPException:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, ServerBusy) else None
    return HTTPException(status_code=status_for(exc), detail=message_for(exc), headers=headers)


async def guarded(call: Awaitable[Any]) -> Any:
    """Await a service call, turning its errors into HTTP answers (500 only for genuine internal failures)."""
    try:
        return await call
    except HTTPException:
        raise
    except Exception as exc:
        error = http_error(exc)
        if error.status_code >= 500:
            log.exception("inference request failed")
        raise error from exc


def audio_answer(result: bytes | InferS3Response) -> Response | InferS3Response:
    if isinstance(result, bytes):
        return Response(
            content=result,
            media_type=WAV_MEDIA_TYPE,
            headers={"Content-Disposition": 'inline; filename="speech.wav"'},
        )
    return result


def build_router(service: InferenceService, job_gate: JobGate | None = None) -> APIRouter:
    chapters = ChapterWorker(service)
    router = APIRouter(route_class=TimedRoute, lifespan=chapter_lifespan(chapters))
    opslog: OpsLog = service.opslog

    async def gate(job_id: str) -> None:
        if job_gate is not None:
            await job_gate(job_id)

    # --- speech ----------------------------------------------------------------------------------------------

    @router.post(
        "/infer/{job_id}",
        tags=["inference"],
        response_model=InferS3Response,
        responses=AUDIO_RESPONSES,
        summary="Generate one utterance in a fine-tuned voice (WAV, or uploaded to S3)",
    )
    async def infer(job_id: str, body: InferRequest):
        await gate(job_id)
        return audio_answer(await guarded(service.speech.infer(job_id, body)))

    @router.post(
        "/infer/{job_id}/batch",
        tags=["inference"],
        response_model=list[InferS3Response | BatchItemError],
        summary="Generate many utterances in one voice and upload them; results in request order",
    )
    async def infer_batch(job_id: str, body: BatchInferRequest):
        await gate(job_id)
        return await guarded(service.speech.infer_batch(job_id, body))

    @router.post(
        "/voice-design",
        tags=["inference"],
        response_model=InferS3Response,
        responses=AUDIO_RESPONSES,
        summary="Generate speech in a voice described by an instruction (VoiceDesign model)",
    )
    async def voice_design(body: VoiceDesignRequest):
        return audio_answer(await guarded(service.speech.voice_design(body)))

    @router.post(
        "/voice-clone",
        tags=["inference"],
        response_model=InferS3Response,
        responses=AUDIO_RESPONSES,
        summary="Clone a voice from reference audio for one text (Base model)",
    )
    async def voice_clone(body: VoiceCloneRequest):
        return audio_answer(await guarded(service.speech.voice_clone(body)))

    @router.post(
        "/voice-clone/batch",
        tags=["inference"],
        response_model=list[InferS3Response | InlineAudioResponse | BatchItemError],
        summary="Clone a voice from reference audio for many texts; the clone prompt is computed once",
        description="Results in request order: the S3 object of each item (or, with `upload_to_s3: false`, its WAV "
        "base64-encoded in `audio_base64`), or in a failed item's place `{index, filename, text, error, "
        "status_code}`.",
    )
    async def voice_clone_batch(body: VoiceCloneBatchRequest):
        return await guarded(service.speech.voice_clone_batch(body))

    # --- voices ----------------------------------------------------------------------------------------------

    @router.post(
        "/voices/{job_id}",
        tags=["voices"],
        response_model=VoiceInfo,
        summary="Register (and preload) a voice",
        description=REGISTER_HELP,
    )
    async def register_voice(job_id: str, body: VoiceRegistration):
        if body.checkpoint_path and body.checkpoint_path.startswith(("/", "\\")):
            raise HTTPException(
                400,
                f"checkpoint_path {body.checkpoint_path!r} must be relative to VFT_DATA_DIR, inside jobs/{job_id}/",
            )
        return await guarded(
            service.catalog.register(
                job_id,
                body.speaker_name,
                checkpoint_path=body.checkpoint_path,
                s3_prefix=body.s3_prefix,
                preload=body.preload,
            )
        )

    @router.delete("/voices/{job_id}", tags=["voices"], summary="Unregister a voice and unload its model")
    async def unregister_voice(job_id: str) -> dict[str, Any]:
        if not await guarded(service.catalog.unregister(job_id)):
            raise HTTPException(404, f"no voice is registered for job {job_id!r}")
        return {"job_id": job_id, "unregistered": True}

    @router.get("/voices", tags=["voices"], response_model=list[VoiceInfo], summary="Registered voices")
    async def list_voices():
        return service.catalog.all()

    # --- GPU -------------------------------------------------------------------------------------------------

    @router.get("/gpu/status", tags=["gpu"], response_model=GPUStatus)
    async def gpu_status():
        return service.gpu.status()

    @router.post(
        "/gpu/unload", tags=["gpu"], summary="Unload every model now (they reload on the next request)"
    )
    async def gpu_unload() -> dict[str, Any]:
        return await guarded(service.gpu.unload_all())

    @router.put("/gpu/config", tags=["gpu"], summary="Change the idle timeout (0 disables auto-unload)")
    async def gpu_config(body: GPUConfig) -> dict[str, Any]:
        return service.gpu.set_idle_timeout(body.idle_timeout_seconds)

    @router.get("/gpu/cleanup", tags=["gpu"], summary="Run the disk LRU over the jobs folder now")
    async def gpu_cleanup(
        threshold_gb: float | None = Query(None, ge=0, description="Default: VFT_DISK_CACHE_GB (20)"),
    ) -> dict[str, Any]:
        return await guarded(service.disk_keeper.prune_disk(threshold_gb))

    # --- storage ---------------------------------------------------------------------------------------------

    @router.get("/storage/status", tags=["storage"], response_model=StorageStatus)
    async def storage_status():
        storage = service.storage
        return StorageStatus(configured=storage.configured, endpoint=storage.endpoint, bucket=storage.bucket)

    @router.get("/storage/list/{job_id}", tags=["storage"], response_model=StorageList)
    async def storage_list(job_id: str):
        def listing() -> StorageList:
            service.outputs.require_storage()
            prefix = build_key("audio", check_voice_id(job_id)) + "/"
            files = [
                StorageFile(key=obj.key, url=service.storage.presigned_url(obj.key))
                for obj in service.storage.list(prefix)
            ]
            return StorageList(job_id=job_id, count=len(files), files=files)

        return await guarded(asyncio.to_thread(listing))

    # --- operations and metrics ------------------------------------------------------------------------------

    @router.get("/ops/averages", tags=["ops"], response_model=dict[str, OpAverage])
    async def ops_averages():
        return opslog.averages()

    @router.get("/ops/history", tags=["ops"])
    async def ops_history(
        job_id: str | None = None, op_name: str | None = None, limit: int | None = Query(None, ge=1)
    ) -> list[dict[str, Any]]:
        return opslog.history(job_id=job_id, op_name=op_name, limit=limit)

    @router.get("/ops/running", tags=["ops"])
    async def ops_running() -> list[dict[str, Any]]:
        return opslog.running()

    @router.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def prometheus_metrics() -> Response:
        body, content_type = exposition()
        return Response(content=body, media_type=content_type)

    # --- OpenAI-compatible audio API (/v1) -------------------------------------------------------------------

    add_openai_routes(router, service, job_gate=job_gate)

    # --- audiobook chapters (/synthesis) ---------------------------------------------------------------------

    add_chapter_routes(router, chapters)
    return router
