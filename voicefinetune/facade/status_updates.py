"""Writing a job's changes through to its record: status, progress, warnings and failure (with the metrics of
finished jobs and the job's webhook). A deleted job is never saved again."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ..lifecycle import FAILED, TERMINAL_STATUSES
from ..schemas import JobStatusName, Progress
from ..webhooks import WebhookSender
from .jobstore import JobRecord, JobStore
from .metrics import JOB_DURATION, JOBS_FINISHED


def purge_upload(record: JobRecord) -> None:
    """Delete the uploaded dataset zip once the job no longer needs it."""
    if record.upload_path:
        Path(record.upload_path).unlink(missing_ok=True)
        record.upload_path = None


class StatusUpdater:
    def __init__(self, store: JobStore, public: Callable[[str], str], webhooks: WebhookSender | None = None):
        self.store = store
        self.webhooks = webhooks
        self.public = (
            public  # a job's error and warnings are shown to clients: no server folders, no S3 endpoint
        )
        self._saved_at: dict[str, float] = {}

    def seconds_since_save(self, job_id: str) -> float:
        return time.monotonic() - self._saved_at.get(job_id, 0.0)

    def forget(self, job_id: str) -> None:
        self._saved_at.pop(job_id, None)

    def set_status(self, record: JobRecord, status: JobStatusName, progress: Progress | None) -> None:
        record.job.status = status
        record.job.progress = progress
        self.persist(record)
        if status in TERMINAL_STATUSES:
            JOBS_FINISHED.labels(status=status).inc()
            JOB_DURATION.labels(status=status).observe(time.time() - (record.job.created_at or time.time()))
            if self.webhooks is not None and record.job.job_id in self.store:
                self.webhooks.job_finished(
                    record.request.webhook_url,
                    record.job.job_id,
                    status,
                    speaker_name=record.job.speaker_name,
                    error=record.job.error,
                )

    def fail(self, record: JobRecord, error: str) -> None:
        record.job.error = self.public(error)
        purge_upload(record)
        self.set_status(record, FAILED, record.job.progress)

    def warn(self, record: JobRecord, warning: str, save: bool = True) -> None:
        warning = self.public(warning)
        if warning not in record.job.warnings:
            record.job.warnings.append(warning)
            if save:
                self.persist(record)

    def persist(self, record: JobRecord) -> None:
        if record.job.job_id not in self.store:  # deleted meanwhile: never bring it back
            return
        record.job.updated_at = time.time()
        self._saved_at[record.job.job_id] = time.monotonic()
        self.store.save(record)
