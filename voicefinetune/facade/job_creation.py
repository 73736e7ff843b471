"""Creating a job: validate its dataset, answer a repeated ``job_id`` idempotently, save the record and queue it."""

from __future__ import annotations

import asyncio
import functools
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..lifecycle import QUEUED
from ..schemas import FinetuneConfig, FinetuneRequest, Job, Progress
from ..settings import Settings
from ..storage import Storage
from ..webhooks import check_webhook_url
from .backend import JobConflict, new_job_id
from .dataset_checks import check_dataset_key, check_dataset_zip
from .jobstore import JobRecord, JobStore
from .training_queue import TrainingQueue


@functools.cache
def _flash_attn_for(device: str, use_flash_attn: bool) -> bool:
    from ..qwen import choose_runtime

    settings = Settings(device=device, use_flash_attn=use_flash_attn)
    return choose_runtime(settings).flash_attention


def flash_attn_enabled(settings: Settings) -> bool:
    """Whether trainings will actually use flash attention: USE_FLASH_ATTN=1, CUDA present and flash_attn
    installed (the response's ``config.flash_attn`` reports this, not just the setting, until the trainer says
    which attention it loaded)."""
    return settings.use_flash_attn and _flash_attn_for(settings.device, settings.use_flash_attn)


def queued_progress(request: FinetuneRequest) -> Progress:
    """A waiting job already shows the six progress fields (nothing done yet)."""
    return Progress(stage=QUEUED, total_epochs=request.num_epochs)


def same_request(a: FinetuneRequest, b: FinetuneRequest) -> bool:
    return a.model_dump(exclude={"job_id"}) == b.model_dump(exclude={"job_id"})


@dataclass
class JobCreator:
    settings: Settings
    storage: Storage
    store: JobStore
    queue: TrainingQueue
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    @property
    def uploads_dir(self) -> Path:
        return self.settings.data_dir / "uploads"

    async def create(self, request: FinetuneRequest, upload: Path | None = None) -> Job:
        await check_webhook_url(request.webhook_url, self.settings)
        if request.job_id and (existing := self._existing(request)):
            return existing
        if upload is not None:
            await asyncio.to_thread(check_dataset_zip, upload)
        else:
            await check_dataset_key(self.storage, request.dataset_s3_key)
        async with self._lock:
            if request.job_id and (existing := self._existing(request)):
                return existing
            job_id = request.job_id or new_job_id()
            upload_path = None
            if upload is not None:
                self.uploads_dir.mkdir(parents=True, exist_ok=True)
                target = self.uploads_dir / f"{job_id}.zip"
                shutil.move(upload, target)
                upload_path = str(target.resolve())
            now = time.time()
            job = Job(
                job_id=job_id,
                status=QUEUED,
                speaker_name=request.speaker_name,
                progress=queued_progress(request),
                config=FinetuneConfig(
                    num_epochs=request.num_epochs,
                    batch_size=request.batch_size,
                    lr=request.lr,
                    flash_attn=flash_attn_enabled(self.settings),
                    method=request.method,
                ),
                dataset_s3_key=None if upload is not None else request.dataset_s3_key,
                book_id=request.book_id,
                chapter_id=request.chapter_id,
                character_id=request.character_id,
                resume_job_id=request.resume_job_id,
                created_at=now,
                updated_at=now,
            )
            record = JobRecord(
                job=job, request=request.model_copy(update={"job_id": job_id}), upload_path=upload_path
            )
            self.store.save(record)
        self.queue.schedule(job_id)
        return job

    def _existing(self, request: FinetuneRequest) -> Job | None:
        record = self.store.get(request.job_id) if request.job_id else None
        if record is None:
            return None
        if not same_request(record.request, request):
            raise JobConflict.different_parameters(record.job.job_id)
        return record.job
