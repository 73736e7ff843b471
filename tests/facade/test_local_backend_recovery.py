"""What the local backend does at start with jobs a previous server left unfinished and whose data is gone."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from voicefinetune.facade.jobstore import JobRecord, JobStore
from voicefinetune.facade.recovery import RESTART_LOST
from voicefinetune.schemas import FinetuneRequest, Job, Progress
from voicefinetune.serve import create_local_app
from voicefinetune.settings import Settings


def leftover(
    store: JobStore, job_id: str, status: str, upload: Path | None, key: str = "datasets/x.zip"
) -> None:
    store.save(
        JobRecord(
            job=Job(job_id=job_id, status=status, created_at=time.time(), progress=Progress(stage=status)),
            request=FinetuneRequest(dataset_s3_key=key, speaker_name="Hero", job_id=job_id),
            upload_path=str(upload) if upload else None,
            child_pid=999_999_999,  # no such process: nothing to reap
        )
    )


def test_unfinished_jobs_without_their_dataset_fail_with_a_message(settings: Settings, storage) -> None:
    store = JobStore(settings.state_dir / "jobs")
    store.load()
    leftover(store, "was-training", "training", settings.data_dir / "uploads" / "gone.zip")
    leftover(store, "was-preparing", "preparing", None, key="datasets/deleted.zip")
    leftover(store, "was-ready", "ready", None)
    with TestClient(create_local_app(settings)) as http:
        jobs = {job["job_id"]: job for job in http.get("/jobs").json()}
        assert set(jobs) == {"was-training", "was-preparing", "was-ready"}
        for job_id in ("was-training", "was-preparing"):
            assert jobs[job_id]["status"] == "failed"
            assert "interrupted by a server restart; resubmit" in jobs[job_id]["error"]
        assert jobs["was-ready"]["status"] == "ready"
    assert RESTART_LOST.startswith("interrupted by a server restart; resubmit")
    # The outcome is on disk, not only in memory.
    assert {r.job.job_id: r.job.status for r in JobStore(settings.state_dir / "jobs").load()} == {
        "was-training": "failed",
        "was-preparing": "failed",
        "was-ready": "ready",
    }


def test_stopping_the_server_does_not_start_the_next_queued_job(
    settings: Settings, storage, dataset_zip: Path
) -> None:
    """The slot freed when stop() ends a training must not start the job waiting behind it: that one stays
    `queued` on disk (no spurious "re-queued after a restart" warning), and the next start runs both."""
    with TestClient(create_local_app(settings)) as http:
        ids = []
        for epochs in (500, 1):
            with open(dataset_zip, "rb") as handle:
                r = http.post(
                    "/finetune",
                    files={"dataset": handle},
                    data={"speaker_name": "Hero", "num_epochs": epochs},
                )
            ids.append(r.json()["job_id"])
        deadline = time.monotonic() + 90
        while http.get(f"/jobs/{ids[0]}").json()["status"] not in ("training", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    first, second = JobStore(settings.state_dir / "jobs").load()
    assert (first.job.job_id, first.job.status) == (ids[0], "training")
    assert (second.job.job_id, second.job.status, second.job.warnings) == (ids[1], "queued", [])
    assert second.child_pid is None and not (settings.job_dir(ids[1]) / "train.log").exists()


def test_an_upload_without_a_job_record_is_removed_on_start(
    settings: Settings, storage, dataset_zip: Path
) -> None:
    """A crash between moving the upload into place and saving its record leaves uploads/{id}.zip behind."""
    uploads = settings.data_dir / "uploads"
    uploads.mkdir(parents=True)
    orphan = uploads / "crashed.zip"
    orphan.write_bytes(dataset_zip.read_bytes())
    kept = uploads / "waiting.zip"
    kept.write_bytes(dataset_zip.read_bytes())
    store = JobStore(settings.state_dir / "jobs")
    store.load()
    leftover(store, "waiting", "failed", kept)
    with TestClient(create_local_app(settings)) as http:
        assert {job["job_id"] for job in http.get("/jobs").json()} == {"waiting"}
    assert not orphan.exists()
    assert kept.exists()
