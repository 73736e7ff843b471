"""Deleting a job: cancel whatever runs for it, unload its voice, remove its record and files."""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..settings import Settings
from .jobstore import JobRecord, JobStore
from .status_updates import StatusUpdater
from .training_queue import TrainingQueue
from .voice_loading import VoiceHost

log = logging.getLogger(__name__)


@dataclass
class JobDeleter:
    settings: Settings
    store: JobStore
    status: StatusUpdater
    queue: TrainingQueue
    voices: VoiceHost

    async def delete(self, job_id: str) -> bool:
        record = self.store.get(job_id)
        if record is None:
            return False
        self.store.remove(job_id)  # from here on the id is 404 and nothing saves it again
        self.status.forget(job_id)
        await self.queue.cancel(job_id)
        try:  # returns once the voice's requests have stopped: none restores or writes its files afterwards
            await self.voices.unregister(job_id)
        except Exception:
            log.exception("unloading the voice of deleted job %s failed", job_id)
        await asyncio.to_thread(self._remove_files, record)
        return True

    def _remove_files(self, record: JobRecord) -> None:
        shutil.rmtree(self.settings.job_dir(record.job.job_id), ignore_errors=True)
        if record.upload_path:
            Path(record.upload_path).unlink(missing_ok=True)
