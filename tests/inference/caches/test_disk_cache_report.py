"""The disk LRU's prune report, field by field: what it deleted (with the bytes), what it kept and why, and the
usage before and after, against a real S3 (moto) and real folders of known sizes."""

from __future__ import annotations

import threading
from pathlib import Path

from voicefinetune_inference.caches.disk_cache import DiskCache, DiskCandidate

from voicefinetune.settings import Settings
from voicefinetune.storage import Storage


def model_folder(root: Path, job_id: str, size: int) -> Path:
    folder = root / job_id / "output" / "checkpoint-epoch-1"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\0" * size)
    return folder


def free_locks() -> tuple[dict[str, threading.Lock], object]:
    locks: dict[str, threading.Lock] = {}
    return locks, lambda job_id: locks.setdefault(job_id, threading.Lock())


def test_the_report_names_each_deleted_and_kept_folder_with_its_reason(storage, tmp_path):
    jobs = tmp_path / "jobs"
    backed = model_folder(jobs, "backed", 3000)
    storage.upload_dir(backed, "checkpoints/backed")
    unverified = model_folder(jobs, "unverified", 2000)
    busy = model_folder(jobs, "busy", 1000)
    storage.upload_dir(busy, "checkpoints/busy")
    outside = model_folder(tmp_path / "elsewhere", "outside", 4000)
    locks, lock_for = free_locks()
    locks["busy"] = threading.Lock()
    locks["busy"].acquire()
    candidates = [
        DiskCandidate("gone", jobs / "gone", "checkpoints/gone", 0.0),
        DiskCandidate("outside", outside, "checkpoints/outside", 1.0),
        DiskCandidate("busy", busy, "checkpoints/busy", 2.0),
        DiskCandidate("unverified", unverified, "checkpoints/unverified", 3.0),
        DiskCandidate("backed", backed, "checkpoints/backed", 4.0),
    ]

    report = DiskCache(jobs, storage).prune(1000, list(reversed(candidates)), lock_for)

    assert report == {
        "threshold_gb": 0.000001,
        "used_gb_before": 0.000006,
        "used_gb": 0.000003,
        "deleted": [{"job_id": "backed", "folder": str(backed), "bytes": 3000}],
        "kept": [
            {"job_id": "gone", "folder": str(jobs / "gone"), "reason": "not on disk"},
            {"job_id": "outside", "folder": str(outside), "reason": "outside the jobs folder"},
            {"job_id": "busy", "folder": str(busy), "reason": "being loaded"},
            {
                "job_id": "unverified",
                "folder": str(unverified),
                "reason": "local only: S3 does not hold a verified copy under checkpoints/unverified",
            },
        ],
    }
    assert not (jobs / "backed").exists()  # its empty parents went with it
    assert busy.exists() and unverified.exists() and outside.exists()
    assert not locks["backed"].locked()


def test_pruning_stops_once_usage_is_under_the_threshold(storage, tmp_path):
    jobs = tmp_path / "jobs"
    old = model_folder(jobs, "old", 2000)
    new = model_folder(jobs, "new", 2000)
    for job_id, folder in (("old", old), ("new", new)):
        storage.upload_dir(folder, f"checkpoints/{job_id}")
    _, lock_for = free_locks()
    candidates = [
        DiskCandidate("new", new, "checkpoints/new", 2.0),
        DiskCandidate("old", old, "checkpoints/old", 1.0),
    ]

    report = DiskCache(jobs, storage).prune(2000, candidates, lock_for)

    assert report == {
        "threshold_gb": 0.000002,
        "used_gb_before": 0.000004,
        "used_gb": 0.000002,
        "deleted": [{"job_id": "old", "folder": str(old), "bytes": 2000}],
        "kept": [],
    }
    assert new.exists()


def test_without_storage_every_folder_is_local_only(tmp_path):
    jobs = tmp_path / "jobs"
    folder = model_folder(jobs, "local", 1000)
    unconfigured = Storage(Settings.from_env({"VFT_DATA_DIR": str(tmp_path / "data")}))
    _, lock_for = free_locks()

    report = DiskCache(jobs, unconfigured).prune(0, [DiskCandidate("local", folder, "p", 0.0)], lock_for)

    assert report == {
        "threshold_gb": 0.0,
        "used_gb_before": 0.000001,
        "used_gb": 0.000001,
        "deleted": [],
        "kept": [{"job_id": "local", "folder": str(folder), "reason": "local only (storage not configured)"}],
    }


def test_a_folder_already_gone_is_reported_as_such_even_while_its_lock_is_held(storage, tmp_path):
    jobs = tmp_path / "jobs"
    model_folder(jobs, "other", 1000)
    locks, lock_for = free_locks()
    locks["gone"] = threading.Lock()
    locks["gone"].acquire()

    report = DiskCache(jobs, storage).prune(0, [DiskCandidate("gone", jobs / "gone", "p", 0.0)], lock_for)

    assert report["kept"] == [{"job_id": "gone", "folder": str(jobs / "gone"), "reason": "not on disk"}]


def test_the_report_gives_sizes_in_gigabytes_to_the_kilobyte(storage, tmp_path):
    jobs = tmp_path / "jobs"
    kept = model_folder(jobs, "kept", 1_234)  # 0.000001234 GB: six decimals show 0.000001, seven 0.0000012
    locks, lock_for = free_locks()

    report = DiskCache(jobs, storage).prune(
        2_345, [DiskCandidate("kept", kept, "checkpoints/kept", 0.0)], lock_for
    )

    assert (report["threshold_gb"], report["used_gb_before"], report["used_gb"]) == (
        0.000002,
        0.000001,
        0.000001,
    )
    assert report["deleted"] == []
