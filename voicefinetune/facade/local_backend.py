"""The one-machine backend: job records on disk, a queue, `vft train` child processes, voices loaded in-process.

A job moves ``queued → preparing → training → loading → ready | failed``. At most
``settings.max_concurrent_trainings`` trainings run at once (one by default, the GPU's share); the others wait in
submission order. On start, jobs that a previous server left unfinished are run again from the beginning when their
dataset is still there, and failed with a message saying to resubmit when it is not.

This class only wires the parts together: ``job_creation``, ``training_queue`` (with ``job_runner`` and
``voice_loading``), ``recovery`` and ``job_deletion``.
"""

from __future__ import annotations

from pathlib import Path

from ..opslog import OpsLog
from ..public_text import PublicText
from ..schemas import FinetuneRequest, Job
from ..settings import Settings
from ..storage import Storage
from ..webhooks import WebhookSender
from .dataset_validation import DatasetValidator
from .job_creation import JobCreator
from .job_deletion import JobDeleter
from .job_runner import JobRunner
from .jobstore import JobStore
from .recovery import StartupRecovery
from .status_updates import StatusUpdater
from .training_queue import TrainingQueue
from .voice_loading import DiskPrune, VoiceHost, VoiceLoader


class LocalBackend:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        opslog: OpsLog,
        voices: VoiceHost,
        prune_disk: DiskPrune,
    ):
        self.store = JobStore(settings.state_dir / "jobs")
        self.webhooks = WebhookSender(settings)
        status = StatusUpdater(self.store, PublicText.of(settings), self.webhooks)
        runner = JobRunner(settings, storage, opslog, self.store, status)
        voice_loader = VoiceLoader(settings, self.store, status, voices, prune_disk)
        validator = DatasetValidator(settings, storage, status)
        self.queue = TrainingQueue(
            self.store, status, runner, voice_loader, validator, settings.max_concurrent_trainings
        )
        self.recovery = StartupRecovery(settings, storage, self.store, status, self.queue, voices)
        self.creator = JobCreator(settings, storage, self.store, self.queue)
        self.deleter = JobDeleter(settings, self.store, status, self.queue, voices)

    async def start(self) -> None:
        self.queue.open()
        await self.recovery.run()

    async def stop(self) -> None:
        """End running trainings; their records stay as they are and the next start runs them again."""
        await self.queue.stop()
        await self.webhooks.close()

    async def create(self, request: FinetuneRequest, upload: Path | None = None) -> Job:
        return await self.creator.create(request, upload)

    async def get(self, job_id: str) -> Job | None:
        record = self.store.get(job_id)
        return record.job if record else None

    async def list(self) -> list[Job]:
        return [record.job for record in self.store.all()]

    async def delete(self, job_id: str) -> bool:
        return await self.deleter.delete(job_id)
