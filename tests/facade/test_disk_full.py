"""A full disk is the server's fault: against a real `vft serve` whose uploads and jobs folders are small tmpfs file
systems (real ENOSPC), an upload that fills the disk is a 507 saying so, and a dataset whose extraction fills it
fails its job with an error saying the server's disk is full (never "malformed" or "zip it again")."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.servers import Server, free_port, server_environment
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage

UPLOADS_SIZE = 1024 * 1024  # holds the test dataset (~430 kB), not a 2 MB upload
JOBS_SIZE = 384 * 1024  # holds a training log, not the test dataset extracted (~630 kB)


def mount_small_filesystem(folder: Path, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"a real full disk needs a small tmpfs, and `mount -t tmpfs` failed (run as root): {mounted.stderr}"
        )


@pytest.fixture(scope="module")
def small_disks(tmp_path_factory, s3_endpoint: str, tiny_models) -> Iterator[Server]:
    """A `vft serve` whose data/uploads and data/jobs folders are small tmpfs file systems."""
    root = tmp_path_factory.mktemp("serve-disk-full")
    data = root / "data"
    mounts = [data / "uploads", data / "jobs"]
    try:
        mount_small_filesystem(mounts[0], UPLOADS_SIZE)
        mount_small_filesystem(mounts[1], JOBS_SIZE)
        env = server_environment(
            data,
            s3_endpoint=s3_endpoint,
            bucket=f"vft-full-{uuid.uuid4().hex[:10]}",
            tiny_root=tiny_models.root,
        )
        Storage(Settings.from_env(env)).ensure_bucket()
        server = Server(env=env, port=free_port(), log_path=root / "serve.log").start()
        yield server
        server.stop()
    finally:
        for folder in mounts:
            subprocess.run(["umount", "--lazy", str(folder)], capture_output=True)


def test_an_upload_that_fills_the_disk_is_507(small_disks: Server) -> None:
    with small_disks.client() as http:
        r = http.post(
            "/finetune",
            files={"dataset": ("big.zip", b"\0" * (2 * UPLOADS_SIZE))},
            data={"speaker_name": "Hero"},
        )
        jobs = http.get("/jobs").json()
    assert r.status_code == 507, r.text
    assert r.json() == {
        "detail": "the server's disk is full: the uploaded dataset could not be written; free space on the server "
        "(or ask its administrator to), then try again"
    }
    assert jobs == []
    assert list((small_disks.settings.data_dir / "uploads").iterdir()) == []  # the partial file went


def test_an_extraction_that_fills_the_disk_fails_the_job_saying_so(
    small_disks: Server, dataset_zip: Path
) -> None:
    with small_disks.client() as http:
        r = http.post("/finetune", files={"dataset": dataset_zip.read_bytes()}, data={"speaker_name": "Hero"})
    assert r.status_code == 202, r.text
    job = small_disks.wait_for(r.json()["job_id"], timeout=120)
    assert job["status"] == "failed", job
    assert job["error"] == (
        "the server's disk is full: the extracted dataset could not be written; free space on the server "
        "(or ask its administrator to), then try again"
    )
    assert not (
        small_disks.settings.job_dir(job["job_id"]) / "dataset"
    ).exists()  # the partial extraction went
