"""Job records on disk and the pieces of the training runner that need no training."""

from __future__ import annotations

import json
import os
from pathlib import Path

from voicefinetune.facade.jobstore import JobRecord, JobStore, atomic_write_text
from voicefinetune.facade.training_runner import parse_event
from voicefinetune.schemas import FinetuneRequest, Job, Progress
from voicefinetune.settings import Settings
from voicefinetune.train_request import TrainRequest


def record(job_id: str, created_at: float, status: str = "queued") -> JobRecord:
    return JobRecord(
        job=Job(job_id=job_id, status=status, created_at=created_at),
        request=FinetuneRequest(dataset_s3_key="datasets/a.zip", job_id=job_id),
    )


def test_records_survive_a_new_store_in_creation_order(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    store.load()
    store.save(record("b", 2.0))
    store.save(record("a", 1.0, "training"))
    store.remove("missing")
    reopened = JobStore(tmp_path / "jobs")
    loaded = reopened.load()
    assert [r.job.job_id for r in loaded] == ["a", "b"]
    assert reopened.get("a").job.status == "training"
    reopened.remove("a")
    assert [r.job.job_id for r in JobStore(tmp_path / "jobs").load()] == ["b"]


def test_a_torn_or_foreign_file_is_skipped(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    store.load()
    store.save(record("good", 1.0))
    (tmp_path / "jobs" / "bad.json").write_text('{"job": {"job_id": "bad"')
    assert [r.job.job_id for r in JobStore(tmp_path / "jobs").load()] == ["good"]


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write_text(target, "1")
    atomic_write_text(target, "2")
    assert target.read_text() == "2"
    assert os.listdir(tmp_path) == ["x.json"]


def test_parse_event_takes_only_json_objects_with_a_stage() -> None:
    assert parse_event('{"stage": "training", "epoch": 1}\n') == {"stage": "training", "epoch": 1}
    assert parse_event("some library chatter") is None
    assert parse_event('{"no_stage": 1}') is None
    assert parse_event("{broken") is None
    assert parse_event("[1, 2]") is None


def test_child_environment_reproduces_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        device="cpu",
        use_flash_attn=False,
        s3_access_key="k",
        s3_secret_key="s",
        data_dir=tmp_path,
        tiny_models=True,
        max_concurrent_trainings=2,
        disk_cache_gb=1.5,
    )
    assert Settings.from_env(settings.to_env()) == settings


def test_train_command_follows_the_trainer_contract(tmp_path: Path) -> None:
    argv = TrainRequest(
        "j1", "datasets/x.zip", "Hero", 3, 2, 1e-6, resume_from="checkpoints/j0", output_dir=tmp_path
    ).local_command()
    joined = " ".join(argv)
    for expected in (
        "train",
        "--job-id j1",
        "--dataset datasets/x.zip",
        "--speaker-name Hero",
        "--num-epochs 3",
        "--batch-size 2",
        "--lr 1e-06",
        f"--output-dir {tmp_path}",
        "--resume-from checkpoints/j0",
    ):
        assert expected in joined
    assert json.loads(json.dumps(argv)) == argv


def test_progress_always_shows_its_six_fields() -> None:
    job = Job(job_id="a", status="preparing", progress=Progress(stage="preparing", total_epochs=3))
    shown = json.loads(job.model_dump_json(exclude_none=True))  # how GET /jobs/{id} serializes
    assert list(shown["progress"]) == ["stage", "epoch", "total_epochs", "step", "loss", "global_step"]
    assert shown["progress"]["loss"] is None and "error" not in shown
    assert Job.model_validate(shown) == job
