"""The last stage of a job: load its trained voice into the inference service and mark the job ready."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..lifecycle import LOADING, READY
from ..settings import Settings
from .jobstore import JobRecord, JobStore
from .status_updates import StatusUpdater, purge_upload

log = logging.getLogger(__name__)


class VoiceHost(Protocol):
    """The inference server's voices as the backend drives them (its ``VoiceCatalog`` implements it)."""

    async def register(
        self,
        job_id: str,
        speaker_name: str,
        *,
        checkpoint_path: str | None = None,
        s3_prefix: str | None = None,
        preload: bool = False,
    ) -> Any: ...

    async def unregister(self, job_id: str) -> Any:
        """Stop the voice's requests and unload it; returns once nothing uses or restores its files."""

    def all(self) -> list[dict[str, Any]]:
        """The registered voices (``job_id`` each)."""


DiskPrune = Callable[[], Awaitable[Any]]  # the inference server's disk LRU, run after each training


@dataclass
class VoiceLoader:
    settings: Settings
    store: JobStore
    status: StatusUpdater
    voices: VoiceHost
    prune_disk: DiskPrune

    async def load(self, record: JobRecord) -> None:
        job = record.job
        self.status.set_status(record, LOADING, job.progress)
        try:
            await self.voices.register(
                job.job_id,
                record.request.speaker_name,
                checkpoint_path=record.checkpoint_dir,
                s3_prefix=record.s3_prefix,
                preload=True,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("loading the voice of job %s failed", job.job_id)
            self.status.fail(record, f"the trained voice could not be loaded for inference: {exc}")
            return
        if job.job_id not in self.store:
            return
        job.inference_url = f"/infer/{job.job_id}"
        job.checkpoint_path = self._relative_to_data(record.checkpoint_dir)
        purge_upload(record)
        self.status.set_status(record, READY, job.progress)
        await self._prune_disk()

    async def _prune_disk(self) -> None:
        try:
            await self.prune_disk()
        except Exception:
            log.exception("disk prune after training failed")

    def _relative_to_data(self, path: str | None) -> str | None:
        if path is None:
            return None
        try:
            return Path(path).resolve().relative_to(self.settings.data_dir.resolve()).as_posix()
        except ValueError:
            return path
