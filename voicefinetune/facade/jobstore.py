"""Job records on disk for the local backend: one JSON file per job under ``state/jobs/``, written atomically.

Records live in memory for reads (``GET /jobs`` with thousands of jobs stays cheap) and every change is written
through to disk, so a restart (or a crash) loses nothing but the last throttled progress update.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from ..schemas import FinetuneRequest, Job

log = logging.getLogger(__name__)


class JobRecord(BaseModel):
    """What the local backend keeps about a job: the public view plus what it needs to run it again."""

    job: Job
    request: FinetuneRequest
    upload_path: str | None = Field(
        None, description="Uploaded dataset zip (absolute), while the job needs it"
    )
    child_pid: int | None = Field(
        None, description="Process group of the running `vft train`, to reap orphans"
    )
    checkpoint_dir: str | None = Field(None, description="Absolute path of the trained checkpoint")
    s3_prefix: str | None = Field(None, description="Where the trainer published the checkpoint on S3")
    attempts: int = 0


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers (and a crash) see either the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class JobStore:
    def __init__(self, folder: Path):
        self.folder = folder
        self._records: dict[str, JobRecord] = {}

    def load(self) -> list[JobRecord]:
        """Read every record from disk (oldest first); unreadable files are skipped with a warning."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._records.clear()
        for path in self.folder.glob("*.json"):
            try:
                record = JobRecord.model_validate_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, ValidationError) as exc:
                log.warning("skipping unreadable job record %s: %s", path, exc)
                continue
            self._records[record.job.job_id] = record
        return self.all()

    def _path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def get(self, job_id: str) -> JobRecord | None:
        return self._records.get(job_id)

    def all(self) -> list[JobRecord]:
        return sorted(self._records.values(), key=lambda r: (r.job.created_at or 0.0, r.job.job_id))

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def save(self, record: JobRecord) -> None:
        self._records[record.job.job_id] = record
        atomic_write_text(self._path(record.job.job_id), json.dumps(record.model_dump(mode="json")))

    def remove(self, job_id: str) -> None:
        self._records.pop(job_id, None)
        self._path(job_id).unlink(missing_ok=True)
