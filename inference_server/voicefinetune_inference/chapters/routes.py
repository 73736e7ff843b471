"""The ``/synthesis`` endpoints, added to the inference server's router, and the lifespan that starts the chapter
worker with it (resuming unfinished chapters) and stops it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException

from voicefinetune.schemas import InvalidInput
from voicefinetune_inference.chapters.protocol import RegenerateRequest, SynthesisRequest, SynthesisStatus
from voicefinetune_inference.chapters.worker import (
    ChapterWorker,
    SynthesisConflict,
    SynthesisNotFound,
)
from voicefinetune_inference.errors import message_for, status_for

TAG = "synthesis"


async def _answer(call: Any) -> Any:
    try:
        return await call
    except SynthesisNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except SynthesisConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    except InvalidInput as exc:
        raise HTTPException(400, str(exc)) from exc
    except HTTPException:
        raise
    except Exception as exc:
        if status_for(exc) >= 500:
            raise
        raise HTTPException(status_for(exc), message_for(exc)) from exc


def chapter_lifespan(worker: ChapterWorker) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await worker.start()
        try:
            yield
        finally:
            await worker.stop()

    return lifespan


def add_chapter_routes(router: APIRouter, worker: ChapterWorker) -> None:
    def route(path: str, method: str, **options: Any) -> Callable:
        return router.api_route(path, methods=[method], tags=[TAG], **options)

    @route("/synthesis", "POST", status_code=202, response_model=SynthesisStatus)
    async def create_synthesis(body: SynthesisRequest):
        """Render a chapter: `text` in one voice or `items` in theirs, split at sentence ends, joined with pauses;
        the file, a JSON manifest (each segment's time) and subtitles go to S3. Answers at once; poll
        `GET /synthesis/{id}` or give `webhook_url`. See docs/chapters.md."""
        return await _answer(worker.submit(body))

    @route("/synthesis", "GET", response_model=list[SynthesisStatus])
    async def list_syntheses():
        return await _answer(worker.all())

    @route("/synthesis/{synthesis_id}", "GET", response_model=SynthesisStatus)
    async def get_synthesis(synthesis_id: str):
        return await _answer(worker.status(synthesis_id))

    @route("/synthesis/{synthesis_id}", "DELETE")
    async def delete_synthesis(synthesis_id: str) -> dict[str, Any]:
        """Cancel a chapter under way (its status becomes `cancelled`); delete a finished one's files."""
        return await _answer(worker.cancel_or_delete(synthesis_id))

    @route(
        "/synthesis/{synthesis_id}/segments/{index}/regenerate",
        "POST",
        status_code=202,
        response_model=SynthesisStatus,
    )
    async def regenerate_segment(synthesis_id: str, index: int, body: RegenerateRequest | None = None):
        """Render one segment again (optionally with a new `instruct`) and join the chapter anew."""
        return await _answer(worker.regenerate(synthesis_id, index, body or RegenerateRequest()))
