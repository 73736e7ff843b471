"""The queue of jobs: one asyncio task per job, at most ``max_concurrent_trainings`` trainings at once, the
others waiting in submission order; then the trained voice is loaded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from ..error_ids import internal_error_message
from ..lifecycle import QUEUED
from .dataset_validation import DatasetValidator
from .job_runner import JobRunner
from .jobstore import JobStore
from .status_updates import StatusUpdater
from .voice_loading import VoiceLoader

log = logging.getLogger(__name__)


@dataclass
class TrainingQueue:
    store: JobStore
    status: StatusUpdater
    runner: JobRunner
    voice_loader: VoiceLoader
    validator: DatasetValidator
    max_concurrent_trainings: int
    _tasks: dict[str, asyncio.Task] = field(default_factory=dict, init=False)
    _stopping: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(max(1, self.max_concurrent_trainings))

    def open(self) -> None:
        self._stopping = False

    async def stop(self) -> None:
        """End running trainings; their records stay as they are."""
        self._stopping = True
        await self.runner.cancel_all()
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def cancel(self, job_id: str) -> None:
        """End the job's training and its task, whatever stage it is in."""
        await self.runner.cancel(job_id)
        task = self._tasks.get(job_id)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def schedule(self, job_id: str, load_only: bool = False) -> None:
        self._tasks[job_id] = asyncio.create_task(self._run(job_id, load_only), name=f"job-{job_id}")

    async def _run(self, job_id: str, load_only: bool) -> None:
        try:
            if load_only:
                record = self.store.get(job_id)
                if record is not None:
                    await self.voice_loader.load(record)
                return
            record = self.store.get(job_id)
            if record is None or record.job.status != QUEUED:
                return
            # The dataset is checked at once, while the job waits its turn: slots go in submission order.
            validation = asyncio.create_task(self.validator.passes(record))
            try:
                async with self._slots:
                    if not await validation:
                        return
                    record = self.store.get(job_id)
                    # A slot freed by stop() cancelling a training must not start the next one: it stays queued.
                    if record is None or record.job.status != QUEUED or self._stopping:
                        return
                    if await self.runner.train(record):
                        await self.voice_loader.load(record)
            finally:
                validation.cancel()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s failed", job_id)
            record = self.store.get(job_id)
            if record is not None and not self._stopping:
                self.status.fail(record, internal_error_message(exc, f"job {job_id}"))
        finally:
            if self._tasks.get(job_id) is asyncio.current_task():
                del self._tasks[job_id]
