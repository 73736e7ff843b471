"""Where a job with ``resume_job_id`` resumes from."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..storage import Storage, checkpoint_prefix
from .jobstore import JobRecord, JobStore
from .status_updates import StatusUpdater

log = logging.getLogger(__name__)


async def resolve_resume_source(
    record: JobRecord, *, store: JobStore, storage: Storage, status: StatusUpdater
) -> str | None:
    """The checkpoint to resume from: the earlier job's local folder, else its S3 prefix, else None + a warning."""
    resume_id = record.request.resume_job_id
    if not resume_id:
        return None
    earlier = store.get(resume_id)
    if earlier is not None and earlier.checkpoint_dir and Path(earlier.checkpoint_dir).is_dir():
        return earlier.checkpoint_dir
    if storage.configured:
        prefix = (
            earlier.s3_prefix if earlier is not None and earlier.s3_prefix else checkpoint_prefix(resume_id)
        )
        try:
            if await asyncio.to_thread(lambda: next(iter(storage.list(prefix.rstrip("/") + "/")), None)):
                return prefix
        except Exception as exc:
            log.warning("cannot look up checkpoint %s: %s", prefix, exc)
    status.warn(record, f"resume_job_id {resume_id!r} has no checkpoint; training starts from the base model")
    return None
