"""Keeps the jobs folder under VFT_DISK_CACHE_GB: runs the disk LRU over the registered voices, and holds the
per-voice lock that keeps a folder from being deleted while it is restored or loaded."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Collection
from typing import Any

from voicefinetune.schemas import InvalidInput
from voicefinetune.settings import Settings
from voicefinetune_inference.caches.checkpoints import CheckpointLocator
from voicefinetune_inference.caches.disk_cache import GB, DiskCache, DiskCandidate
from voicefinetune_inference.caches.registry import Voice, VoiceRegistry

log = logging.getLogger(__name__)


class DiskKeeper:
    def __init__(
        self, settings: Settings, registry: VoiceRegistry, disk: DiskCache, locator: CheckpointLocator
    ):
        self.settings = settings
        self.registry = registry
        self.disk = disk
        self.locator = locator
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._prune_lock = threading.Lock()

    def lock(self, job_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(job_id, threading.Lock())

    async def prune_disk(self, threshold_gb: float | None = None) -> dict[str, Any]:
        """Run the disk LRU now (``threshold_gb`` defaults to VFT_DISK_CACHE_GB); the report lists what went."""
        threshold = self.settings.disk_cache_gb if threshold_gb is None else threshold_gb
        if threshold < 0:
            raise InvalidInput("threshold_gb must be 0 or more")
        return await asyncio.to_thread(self.prune, threshold)

    def prune(self, threshold_gb: float, exclude: Collection[str] = frozenset()) -> dict[str, Any]:
        with self._prune_lock:
            self.registry.flush()
            candidates = [
                DiskCandidate(
                    job_id=voice.job_id,
                    folder=self.locator.model_folder(voice),
                    s3_prefix=self.locator.s3_prefix(voice),
                    last_used=voice.last_used or voice.registered_at,
                )
                for voice in self.registry.all()
                if voice.job_id not in exclude
            ]
            return self.disk.prune(threshold_gb * GB, candidates, self.lock)

    async def drop_copy(self, voice: Voice) -> None:
        """Delete an unregistered voice's model folder when S3 holds a verified copy of it (a replica's restored
        copy, which the disk LRU, seeing only registered voices, would never delete); a folder only this disk
        holds stays. Best effort: a failure is logged."""
        candidate = DiskCandidate(
            job_id=voice.job_id,
            folder=self.locator.model_folder(voice),
            s3_prefix=self.locator.s3_prefix(voice),
            last_used=0.0,
        )

        def drop() -> None:
            with self._prune_lock:
                self.disk.prune(0, [candidate], self.lock)

        try:
            await asyncio.to_thread(drop)
        except Exception:  # noqa: BLE001 - the voice is unregistered either way
            log.exception("deleting the model folder of unregistered voice %s failed", voice.job_id)

    def prune_quietly(self, exclude: set[str]) -> None:
        try:
            report = self.prune(self.settings.disk_cache_gb, exclude)
            if report["deleted"]:
                log.info("disk LRU after a restore deleted %s", [d["job_id"] for d in report["deleted"]])
        except Exception:  # noqa: BLE001 - the restore succeeded; pruning is best effort here
            log.exception("disk LRU after a restore failed")
