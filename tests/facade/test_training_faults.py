"""A training survives faults in its own bookkeeping: a failing progress handler, absurd numbers in progress events."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from voicefinetune.facade.job_runner import JobRunner
from voicefinetune.facade.jobstore import JobRecord, JobStore
from voicefinetune.facade.stage_timer import StageTimer
from voicefinetune.facade.status_updates import StatusUpdater
from voicefinetune.facade.training_runner import TrainingProcess
from voicefinetune.opslog import OpsLog
from voicefinetune.public_text import PublicText
from voicefinetune.schemas import FinetuneRequest, Job
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage

EVENTS = [
    {"stage": "training", "epoch": 1, "step": 1, "loss": 1.5},
    {
        "stage": "training",
        "epoch": 1e999,
        "step": float("nan"),
        "loss": 1e999,
        "global_step": "x",
        "total_epochs": -1,
    },
    {"stage": "done", "checkpoint_path": "/somewhere"},
]


@dataclass
class ScriptedTrain:
    """Stands in for `vft train`'s command line: a real child process printing the trainer's JSON lines."""

    job_id: str

    def local_command(self) -> list[str]:
        lines = "\n".join(json.dumps(event) for event in EVENTS)
        return [sys.executable, "-c", f"print({lines!r}, flush=True)"]


async def test_a_failing_progress_handler_never_kills_the_training(tmp_path: Path) -> None:
    seen: list[str] = []

    def failing(event: dict) -> None:
        seen.append(event["stage"])
        raise OSError("disk full while saving the job record")

    process = TrainingProcess(ScriptedTrain("faulty"), {}, tmp_path / "train.log", failing)
    await process.start()
    outcome = await process.run()
    assert seen == ["training", "training", "done"]
    assert outcome.returncode == 0 and outcome.succeeded and outcome.error is None


def test_overflowing_progress_numbers_keep_the_job_going(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = JobStore(settings.state_dir / "jobs")
    store.load()
    record = JobRecord(
        job=Job(job_id="big", status="training", created_at=1.0),
        request=FinetuneRequest(dataset_s3_key="datasets/a.zip", job_id="big", num_epochs=3),
    )
    store.save(record)
    opslog = OpsLog(settings.state_dir / "ops.jsonl")
    runner = JobRunner(
        settings, Storage(settings), opslog, store, StatusUpdater(store, PublicText.of(settings))
    )
    tracker = StageTimer(opslog, "big")
    for event in EVENTS[:2]:
        runner._on_event(record, json.loads(json.dumps(event)), tracker)
    progress = record.job.progress
    assert (progress.epoch, progress.step, progress.loss, progress.global_step) == (0, 0, None, 0)
    assert store.get("big").job.status == "training"
