"""The ``validating`` step: a job's dataset checked as soon as it is submitted, ahead of the training queue.

A dataset given by S3 key is downloaded and checked like an upload, with the trainer's own checks
(``dataset.validate_dataset``), so a bad one fails within seconds with the trainer's message instead of when its
turn for the GPU comes. The job stays ``queued`` meanwhile, with ``progress.stage`` ``validating``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..lifecycle import QUEUED
from ..schemas import Progress
from ..settings import Settings
from ..storage import Storage, StorageError
from .jobstore import JobRecord
from .status_updates import StatusUpdater

log = logging.getLogger(__name__)

STAGE_VALIDATING = "validating"


@dataclass
class DatasetValidator:
    settings: Settings
    storage: Storage
    status: StatusUpdater

    async def passes(self, record: JobRecord) -> bool:
        """Check the job's dataset; a bad one fails the job (with every problem named) and gives False."""
        job = record.job
        total_epochs = record.request.num_epochs
        self.status.set_status(record, QUEUED, Progress(stage=STAGE_VALIDATING, total_epochs=total_epochs))
        job_dir = self.settings.job_dir(job.job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="validating-", dir=job_dir))
        try:
            error = await asyncio.to_thread(self._problems, record, folder)
        except Exception:  # the trainer runs the same checks and reports what it finds
            log.exception("job %s: dataset not validated ahead", job.job_id)
            error = None
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        if error:
            self.status.fail(record, error)
            return False
        self.status.set_status(record, QUEUED, Progress(stage=QUEUED, total_epochs=total_epochs))
        return True

    def _problems(self, record: JobRecord, folder: Path) -> str | None:
        from ..dataset import validate_dataset  # the audio stack: only where jobs train on this machine

        archive = Path(record.upload_path) if record.upload_path else folder / "dataset.zip"
        if not record.upload_path:
            key = record.request.dataset_s3_key
            try:
                self.storage.download_file(key, archive)
            except FileNotFoundError:
                return f"dataset_s3_key {key!r} does not exist in bucket {self.storage.bucket!r}: upload the zip there first"
            except StorageError as exc:  # the trainer downloads it again, with its own retries and message
                log.warning("job %s: dataset not validated ahead: %s", record.job.job_id, exc)
                return None
        elif not archive.is_file():
            return None  # the runner says the upload is gone
        return validate_dataset(archive, folder / "check").message or None
