"""Running one job's training: the `vft train` child process, its progress events turned into the job's status."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoints import training_output_dir
from ..lifecycle import (
    PREPARING,
    STAGE_FAILED,
    STAGE_PREPARING,
    STAGE_STATUS,
    event_flash_attention,
    event_progress,
)
from ..opslog import OpsLog
from ..schemas import Progress
from ..settings import Settings
from ..storage import Storage
from ..train_request import TrainRequest, method_fields
from .jobstore import JobRecord, JobStore
from .resume import resolve_resume_source
from .stage_timer import StageTimer
from .status_updates import StatusUpdater
from .training_runner import ProgressEvent, TrainingProcess

PROGRESS_SAVE_INTERVAL = 1.0


@dataclass
class JobRunner:
    settings: Settings
    storage: Storage
    opslog: OpsLog
    store: JobStore
    status: StatusUpdater
    _processes: dict[str, TrainingProcess] = field(default_factory=dict, init=False)

    async def cancel(self, job_id: str) -> None:
        process = self._processes.get(job_id)
        if process is not None:
            await process.cancel()

    async def cancel_all(self) -> None:
        await asyncio.gather(*(p.cancel() for p in list(self._processes.values())), return_exceptions=True)

    async def train(self, record: JobRecord) -> bool:
        """Run `vft train` for the job; True when it produced a checkpoint."""
        job, request = record.job, record.request
        record.attempts += 1
        tracker = StageTimer(self.opslog, job.job_id)
        self.status.set_status(
            record, PREPARING, Progress(stage=STAGE_PREPARING, total_epochs=request.num_epochs)
        )
        tracker.enter(STAGE_PREPARING)
        try:
            return await self._train(record, tracker)
        finally:
            tracker.finish(
                ok=False
            )  # a run that did not end normally (cancelled, failed early) leaves /ops/running

    async def _train(self, record: JobRecord, tracker: StageTimer) -> bool:
        job, request = record.job, record.request
        dataset = record.upload_path or request.dataset_s3_key
        if record.upload_path and not Path(record.upload_path).is_file():
            self.status.fail(
                record, "the uploaded dataset is gone (deleted from the data folder); resubmit it"
            )
            return False
        train_request = TrainRequest(
            job_id=job.job_id,
            dataset=dataset,
            speaker_name=request.speaker_name,
            num_epochs=request.num_epochs,
            batch_size=request.batch_size,
            lr=request.lr,
            gradient_accumulation_steps=request.gradient_accumulation_steps,
            language=request.language,
            **method_fields(request),
            output_dir=training_output_dir(self.settings, job.job_id).resolve(),
            resume_from=await resolve_resume_source(
                record, store=self.store, storage=self.storage, status=self.status
            ),
        )
        env = {**os.environ, **self.settings.to_env()}
        process = TrainingProcess(
            train_request,
            env,
            self.settings.job_dir(job.job_id) / "train.log",
            lambda event: self._on_event(record, event, tracker),
        )
        self._processes[job.job_id] = process
        try:
            record.child_pid = await process.start()
            self.status.persist(record)
            outcome = await process.run()
        except BaseException:  # cancelled (DELETE, shutdown) or a bug: never leave the child running
            process.kill()
            raise
        finally:
            self._processes.pop(job.job_id, None)
            record.child_pid = None
        if outcome.cancelled:
            return False
        tracker.finish(outcome.succeeded)
        if not outcome.succeeded:
            self.status.fail(record, outcome.error or "training failed")
            return False
        done = outcome.last_event or {}
        if not done.get("checkpoint_path"):
            self.status.fail(record, "vft train finished without naming a checkpoint")
            return False
        record.checkpoint_dir = str(Path(done["checkpoint_path"]).resolve())
        record.s3_prefix = done.get("s3_prefix")
        return True

    def _on_event(self, record: JobRecord, event: ProgressEvent, tracker: StageTimer) -> None:
        stage = event["stage"]
        tracker.enter(stage)
        if event.get("warning"):
            self.status.warn(record, str(event["warning"]), save=False)
        if stage == STAGE_FAILED:
            return
        # The attention the trainer loaded: flash attention may have fallen back to sdpa.
        flash_attention = event_flash_attention(event)
        if flash_attention is not None and record.job.config is not None:
            record.job.config.flash_attn = flash_attention
        record.job.progress = Progress.model_validate(
            {"stage": stage, "total_epochs": record.request.num_epochs, **event_progress(event)}
        )
        status = STAGE_STATUS.get(stage, record.job.status)
        if status != record.job.status:
            self.status.set_status(record, status, record.job.progress)
        elif self.status.seconds_since_save(record.job.job_id) >= PROGRESS_SAVE_INTERVAL:
            self.status.persist(record)
