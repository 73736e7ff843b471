"""What the facade needs from wherever jobs live: the local backend (one machine) or Kubernetes."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Protocol

from ..schemas import FinetuneRequest, Job


class JobConflict(Exception):
    """A job with the requested id exists with different parameters."""

    @classmethod
    def different_parameters(cls, job_id: str) -> JobConflict:
        return cls(
            f"job {job_id!r} already exists with different parameters: use another job_id, "
            "or DELETE /jobs/{job_id} first"
        )


def new_job_id() -> str:
    """The id of a job whose request names none."""
    return uuid.uuid4().hex[:12]


class DatasetNotFound(LookupError):
    """The dataset_s3_key names no object; the message names the key."""


class JobBackend(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def create(self, request: FinetuneRequest, upload: Path | None = None) -> Job:
        """Queue a fine-tuning job. ``upload`` is a dataset zip sent with the request (else dataset_s3_key).

        With an ``upload``, ``request.dataset_s3_key`` is only a label (``upload:{filename}`` unless the client sent
        a key); the backend owns the file (move it, or copy it) and decides where the dataset lives.
        With ``request.job_id`` set and a job of that id with the same parameters, returns that job instead of a
        new one (JobConflict when the parameters differ).
        Raises ``DatasetNotFound`` for a missing dataset_s3_key, ``StorageNotConfigured`` when it would need S3
        and S3 is not configured, ``InvalidInput`` for an unusable upload.
        """

    async def get(self, job_id: str) -> Job | None: ...

    async def list(self) -> list[Job]: ...

    async def delete(self, job_id: str) -> bool:
        """Cancel a running job or delete a finished one with its local files; False when unknown."""
