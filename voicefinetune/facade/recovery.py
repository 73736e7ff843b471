"""What happens at start-up to jobs a previous server left unfinished: run again from the beginning when their
dataset is still there, failed with a message saying to resubmit when it is not. Files no job refers to go."""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..checkpoints import training_output_dir
from ..lifecycle import LOADING, QUEUED, TERMINAL_STATUSES
from ..settings import Settings
from ..storage import Storage
from .job_creation import queued_progress
from .jobstore import JobRecord, JobStore
from .status_updates import StatusUpdater
from .training_queue import TrainingQueue
from .training_runner import reap_orphan
from .voice_loading import VoiceHost

log = logging.getLogger(__name__)

RESTART_REQUEUED = "re-queued after a server restart: training started again from the beginning"
RESTART_LOST = "interrupted by a server restart; resubmit (the dataset is no longer available)"


@dataclass
class StartupRecovery:
    settings: Settings
    storage: Storage
    store: JobStore
    status: StatusUpdater
    queue: TrainingQueue
    voices: VoiceHost

    async def run(self) -> None:
        records = self.store.load()
        self._remove_orphan_uploads(records)
        await asyncio.to_thread(self._remove_orphan_job_folders, records)
        for record in records:
            if record.job.status not in TERMINAL_STATUSES:
                await self._recover(record)

    def _remove_orphan_uploads(self, records: list[JobRecord]) -> None:
        """A crash between keeping an upload and saving its job record leaves a zip no record refers to."""
        uploads = self.settings.data_dir / "uploads"
        kept = {str(Path(record.upload_path).resolve()) for record in records if record.upload_path}
        for path in uploads.glob("*.zip") if uploads.is_dir() else ():
            if str(path.resolve()) not in kept:
                log.warning(
                    "removing upload %s: no job refers to it (a crash interrupted its submission)", path
                )
                path.unlink(missing_ok=True)

    def _remove_orphan_job_folders(self, records: list[JobRecord]) -> None:
        """A deletion interrupted by a crash leaves ``jobs/{id}/`` with no record; a folder that a voice registered
        without a job (``POST /voices``) serves stays."""
        jobs = self.settings.jobs_dir
        kept = {record.job.job_id for record in records} | {voice["job_id"] for voice in self.voices.all()}
        for folder in jobs.iterdir() if jobs.is_dir() else ():
            if folder.name not in kept and folder.is_dir() and not folder.is_symlink():
                log.warning(
                    "removing jobs/%s: no job refers to it (its deletion was interrupted)", folder.name
                )
                shutil.rmtree(folder, ignore_errors=True)

    async def _recover(self, record: JobRecord) -> None:
        job = record.job
        if reap_orphan(record.child_pid, job.job_id):
            log.warning("killed a `vft train` left over from a previous server for job %s", job.job_id)
        record.child_pid = None
        if job.status == LOADING and record.checkpoint_dir and Path(record.checkpoint_dir).is_dir():
            self.status.persist(record)
            self.queue.schedule(job.job_id, load_only=True)
            return
        if job.status != QUEUED:
            if not await self._dataset_available(record):
                self.status.fail(record, RESTART_LOST)
                return
            shutil.rmtree(training_output_dir(self.settings, job.job_id), ignore_errors=True)
            job.status, job.progress, job.error = QUEUED, queued_progress(record.request), None
            job.warnings.append(RESTART_REQUEUED)
        self.status.persist(record)
        self.queue.schedule(job.job_id)

    async def _dataset_available(self, record: JobRecord) -> bool:
        if record.upload_path:
            return Path(record.upload_path).is_file()
        if not self.storage.configured:
            return False
        try:
            return await asyncio.to_thread(self.storage.exists, record.request.dataset_s3_key)
        except Exception as exc:
            log.warning("cannot check dataset of job %s: %s", record.job.job_id, exc)
            return False
