"""What the facade needs from wherever jobs live: the local backend (one machine) or Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..schemas import FinetuneRequest, Job


class JobConflict(Exception):
    """A job with the requested id exists with different parameters."""


class DatasetNotFound(LookupError):
    """The dataset_s3_key names no object; the message names the key."""


class JobBackend(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def create(self, request: FinetuneRequest, upload: Path | None = None) -> Job:
        """Queue a fine-tuning job. ``upload`` is a dataset zip sent with the request (else dataset_s3_key).

        With ``request.job_id`` set and an active job of that id, returns that job instead of a new one.
        """

    async def get(self, job_id: str) -> Job | None: ...

    async def list(self) -> list[Job]: ...

    async def delete(self, job_id: str) -> bool:
        """Cancel a running job or delete a finished one with its local files; False when unknown."""
