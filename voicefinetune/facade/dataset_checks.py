"""Refusing a dataset before its job is queued: an unsafe upload, or a dataset_s3_key that S3 cannot serve."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..dataset_layout import check_layout
from ..storage import Storage, StorageNotConfigured
from .backend import DatasetNotFound


def check_dataset_zip(path: Path) -> None:
    """Refuse an upload that is not a safe zip with a train.jsonl (the original service's 400), before queueing it."""
    check_layout(path)


async def check_dataset_key(storage: Storage, key: str) -> None:
    if not storage.configured:
        raise StorageNotConfigured(
            "S3 storage is not configured (set E2E_ACCESS_KEY and E2E_SECRET_KEY) so dataset_s3_key cannot be "
            "read: configure storage or upload the dataset zip as the multipart file field 'dataset'"
        )
    if not await asyncio.to_thread(storage.exists, key):
        raise DatasetNotFound(
            f"dataset_s3_key {key!r} does not exist in bucket {storage.bucket!r}: upload the zip there first"
        )
