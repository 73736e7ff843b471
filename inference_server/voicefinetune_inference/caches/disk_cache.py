"""The disk LRU over the jobs folder: when it grows past a threshold, the least recently used model folders that
S3 verifiably holds are deleted; a deleted model is restored from S3 on its next load.

A folder S3 does not hold (a local-only model), one outside the jobs folder, or one being loaded is never
deleted. Everything here is blocking (file system and S3): call it from a worker thread.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voicefinetune.checkpoints import has_model
from voicefinetune.storage import Storage
from voicefinetune_inference import metrics

log = logging.getLogger(__name__)

GB = 1e9


@dataclass(frozen=True)
class DiskCandidate:
    job_id: str
    folder: Path
    s3_prefix: str  # the registered prefix, else the conventional checkpoints/{job_id}
    last_used: float


def folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:  # deleted while walking
            continue
    return total


def is_inside(folder: Path, root: Path) -> bool:
    try:
        folder.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return folder.resolve() != root.resolve()


class DiskCache:
    def __init__(self, jobs_dir: Path, storage: Storage):
        self.jobs_dir = jobs_dir
        self.storage = storage

    def usage_bytes(self) -> int:
        return folder_bytes(self.jobs_dir) if self.jobs_dir.exists() else 0

    def restore(self, folder: Path, s3_prefix: str) -> Path:
        """Download the model folder from S3 unless it is already complete on disk."""
        if has_model(folder):
            return folder
        if not is_inside(folder, self.jobs_dir):
            raise ValueError(f"refusing to restore a model outside the jobs folder: {folder}")
        log.info("restoring %s from s3 prefix %s", folder, s3_prefix)
        self.storage.download_dir(s3_prefix, folder, replace_existing=False)
        metrics.DISK_RESTORES.inc()
        return folder

    def prune(
        self,
        threshold_bytes: float,
        candidates: list[DiskCandidate],
        lock_for: Callable[[str], threading.Lock],
    ) -> dict:
        """Delete least recently used, S3-backed model folders until the jobs folder fits under the threshold."""
        used_before = used = self.usage_bytes()
        deleted: list[dict] = []
        kept: list[dict] = []
        for candidate in sorted(candidates, key=lambda c: c.last_used):
            if used <= threshold_bytes:
                break
            reason = self._refusal(candidate)
            if reason is None:
                lock = lock_for(candidate.job_id)
                if not lock.acquire(blocking=False):
                    reason = "being loaded"
                else:
                    try:
                        reason = self._refusal(candidate) or self._delete(candidate, deleted)
                    finally:
                        lock.release()
            if reason is not None:
                kept.append({"job_id": candidate.job_id, "folder": str(candidate.folder), "reason": reason})
            else:
                used = max(0, used - deleted[-1]["bytes"])
        return {
            "threshold_gb": round(threshold_bytes / GB, 6),
            "used_gb_before": round(used_before / GB, 6),
            "used_gb": round(self.usage_bytes() / GB, 6),
            "deleted": deleted,
            "kept": kept,
        }

    def _remove_empty_parents(self, folder: Path) -> None:
        """jobs/{id}/output/checkpoint-epoch-N gone: drop output/ and jobs/{id}/ too when nothing else is left."""
        root = self.jobs_dir.resolve()
        parent = folder.resolve().parent
        while parent != root and is_inside(parent, root):
            try:
                parent.rmdir()
            except OSError:  # not empty (logs, other files): keep it
                return
            parent = parent.parent

    def _refusal(self, candidate: DiskCandidate) -> str | None:
        if not candidate.folder.exists():
            return "not on disk"
        if not is_inside(candidate.folder, self.jobs_dir):
            return "outside the jobs folder"
        if not self.storage.configured:
            return "local only (storage not configured)"
        return None

    def _delete(self, candidate: DiskCandidate, deleted: list[dict]) -> str | None:
        if not self.storage.holds_dir(candidate.folder, candidate.s3_prefix):
            return f"local only: S3 does not hold a verified copy under {candidate.s3_prefix}"
        size = folder_bytes(candidate.folder)
        shutil.rmtree(candidate.folder)
        self._remove_empty_parents(candidate.folder)
        metrics.DISK_DELETIONS.inc()
        log.info(
            "disk LRU deleted %s (%d bytes; S3 holds it under %s)",
            candidate.folder,
            size,
            candidate.s3_prefix,
        )
        deleted.append({"job_id": candidate.job_id, "folder": str(candidate.folder), "bytes": size})
        return None
