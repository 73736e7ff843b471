"""The one-machine backend: job records on disk, a queue, `vft train` child processes, voices loaded in-process.

A job moves ``queued → preparing → training → loading → ready | failed``. At most
``settings.max_concurrent_trainings`` trainings run at once (one by default, the GPU's share); the others wait in
submission order. On start, jobs that a previous server left unfinished are run again from the beginning when their
dataset is still there, and failed with a message saying to resubmit when it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from ..opslog import OpsLog
from ..schemas import TERMINAL_STATUSES, FinetuneConfig, FinetuneRequest, InvalidInput, Job, Progress
from ..settings import Settings
from ..storage import Storage, StorageNotConfigured, checkpoint_prefix
from ..trainer.command import TrainRequest
from ..zipsafe import inspect_zip
from .backend import DatasetNotFound, JobConflict
from .jobstore import JobRecord, JobStore
from .metrics import JOB_DURATION, JOBS_FINISHED
from .training_runner import (
    ProgressEvent,
    TrainingProcess,
    reap_orphan,
)

log = logging.getLogger(__name__)

PROGRESS_SAVE_INTERVAL = 1.0
RESTART_REQUEUED = "re-queued after a server restart: training started again from the beginning"
RESTART_LOST = "interrupted by a server restart; resubmit (the dataset is no longer available)"
# Trainer stages → job status; "uploading" is still part of training from the user's point of view.
STAGE_STATUS = {"preparing": "preparing", "training": "training", "uploading": "training", "done": "training"}


class VoiceHost(Protocol):
    """The part of the inference service the backend drives (``InferenceService`` implements it)."""

    async def register_voice(
        self,
        job_id: str,
        speaker_name: str,
        checkpoint_path: str | None = None,
        s3_prefix: str | None = None,
        preload: bool = False,
    ) -> Any: ...

    async def unregister_voice(self, job_id: str) -> Any: ...


@functools.cache
def _flash_attn_for(device: str, use_flash_attn: bool) -> bool:
    from ..qwen import choose_runtime

    settings = Settings(device=device, use_flash_attn=use_flash_attn)
    return choose_runtime(settings).attn_implementation == "flash_attention_2"


def flash_attn_enabled(settings: Settings) -> bool:
    """Whether trainings will actually use flash attention: USE_FLASH_ATTN=1, CUDA present and flash_attn
    installed (the response's ``config.flash_attn`` reports this, not just the setting)."""
    return settings.use_flash_attn and _flash_attn_for(settings.device, settings.use_flash_attn)


def check_dataset_zip(path: Path) -> None:
    """Refuse an upload that is not a safe zip with a train.jsonl (the seed's 400), before queueing it."""
    members = inspect_zip(path)
    if not any(m.name == "train.jsonl" and len(m.parts) <= 2 for m in members):
        raise InvalidInput("Invalid dataset zip (missing train.jsonl): put train.jsonl and data/*.wav in the zip")


def queued_progress(request: FinetuneRequest) -> Progress:
    """A waiting job already shows the six progress fields (nothing done yet)."""
    return Progress(stage="queued", total_epochs=request.num_epochs)


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def same_request(a: FinetuneRequest, b: FinetuneRequest) -> bool:
    return a.model_dump(exclude={"job_id"}) == b.model_dump(exclude={"job_id"})


class LocalBackend:
    def __init__(self, settings: Settings, storage: Storage, opslog: OpsLog, voices: VoiceHost):
        self.settings = settings
        self.storage = storage
        self.opslog = opslog
        self.voices = voices
        self.store = JobStore(settings.state_dir / "jobs")
        self.uploads_dir = settings.data_dir / "uploads"
        self._slots = asyncio.Semaphore(max(1, settings.max_concurrent_trainings))
        self._tasks: dict[str, asyncio.Task] = {}
        self._processes: dict[str, TrainingProcess] = {}
        self._create_lock = asyncio.Lock()
        self._stopping = False
        self._saved_at: dict[str, float] = {}

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        for record in self.store.load():
            if record.job.status not in TERMINAL_STATUSES:
                await self._recover(record)

    async def stop(self) -> None:
        """End running trainings; their records stay as they are and the next start runs them again."""
        self._stopping = True
        await asyncio.gather(*(p.cancel() for p in list(self._processes.values())), return_exceptions=True)
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _recover(self, record: JobRecord) -> None:
        job = record.job
        if reap_orphan(record.child_pid, job.job_id):
            log.warning("killed a `vft train` left over from a previous server for job %s", job.job_id)
        record.child_pid = None
        if job.status == "loading" and record.checkpoint_dir and Path(record.checkpoint_dir).is_dir():
            self._persist(record)
            self._schedule(job.job_id, load_only=True)
            return
        if job.status != "queued":
            if not await self._dataset_available(record):
                self._fail(record, RESTART_LOST)
                return
            shutil.rmtree(self._output_dir(job.job_id), ignore_errors=True)
            job.status, job.progress, job.error = "queued", queued_progress(record.request), None
            job.warnings.append(RESTART_REQUEUED)
        self._persist(record)
        self._schedule(job.job_id)

    async def _dataset_available(self, record: JobRecord) -> bool:
        if record.upload_path:
            return Path(record.upload_path).is_file()
        if not self.storage.configured:
            return False
        try:
            return await asyncio.to_thread(self.storage.exists, record.request.dataset_s3_key)
        except Exception as exc:
            log.warning("cannot check dataset of job %s: %s", record.job.job_id, exc)
            return False

    # --- JobBackend ------------------------------------------------------------------------------------------

    async def create(self, request: FinetuneRequest, upload: Path | None = None) -> Job:
        if request.job_id and (existing := self._existing(request)):
            return existing
        if upload is not None:
            await asyncio.to_thread(check_dataset_zip, upload)
        else:
            await self._check_dataset_key(request.dataset_s3_key)
        async with self._create_lock:
            if request.job_id and (existing := self._existing(request)):
                return existing
            job_id = request.job_id or new_job_id()
            upload_path = None
            if upload is not None:
                self.uploads_dir.mkdir(parents=True, exist_ok=True)
                target = self.uploads_dir / f"{job_id}.zip"
                shutil.move(upload, target)
                upload_path = str(target.resolve())
            now = time.time()
            job = Job(
                job_id=job_id,
                status="queued",
                speaker_name=request.speaker_name,
                progress=queued_progress(request),
                config=FinetuneConfig(
                    num_epochs=request.num_epochs,
                    batch_size=request.batch_size,
                    lr=request.lr,
                    flash_attn=flash_attn_enabled(self.settings),
                ),
                dataset_s3_key=None if upload is not None else request.dataset_s3_key,
                book_id=request.book_id,
                chapter_id=request.chapter_id,
                character_id=request.character_id,
                resume_job_id=request.resume_job_id,
                created_at=now,
                updated_at=now,
            )
            record = JobRecord(job=job, request=request.model_copy(update={"job_id": job_id}), upload_path=upload_path)
            self.store.save(record)
        self._schedule(job_id)
        return job

    def _existing(self, request: FinetuneRequest) -> Job | None:
        record = self.store.get(request.job_id)
        if record is None:
            return None
        if not same_request(record.request, request):
            raise JobConflict(
                f"job {request.job_id!r} already exists with different parameters: use another job_id, "
                "or DELETE /jobs/{job_id} first"
            )
        return record.job

    async def _check_dataset_key(self, key: str) -> None:
        if not self.storage.configured:
            raise StorageNotConfigured(
                "S3 storage is not configured (set E2E_ACCESS_KEY and E2E_SECRET_KEY) so dataset_s3_key cannot be "
                "read: configure storage or upload the dataset zip as the multipart file field 'dataset'"
            )
        if not await asyncio.to_thread(self.storage.exists, key):
            raise DatasetNotFound(
                f"dataset_s3_key {key!r} does not exist in bucket {self.storage.bucket!r}: upload the zip there first"
            )

    async def get(self, job_id: str) -> Job | None:
        record = self.store.get(job_id)
        return record.job if record else None

    async def list(self) -> list[Job]:
        return [record.job for record in self.store.all()]

    async def delete(self, job_id: str) -> bool:
        record = self.store.get(job_id)
        if record is None:
            return False
        self.store.remove(job_id)  # from here on the id is 404 and nothing saves it again
        self._saved_at.pop(job_id, None)
        process = self._processes.get(job_id)
        if process is not None:
            await process.cancel()
        task = self._tasks.get(job_id)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.voices.unregister_voice(job_id)
        await asyncio.to_thread(self._remove_files, record)
        return True

    def _remove_files(self, record: JobRecord) -> None:
        shutil.rmtree(self.settings.job_dir(record.job.job_id), ignore_errors=True)
        if record.upload_path:
            Path(record.upload_path).unlink(missing_ok=True)

    # --- running jobs ----------------------------------------------------------------------------------------

    def _schedule(self, job_id: str, load_only: bool = False) -> None:
        self._tasks[job_id] = asyncio.create_task(self._run(job_id, load_only), name=f"job-{job_id}")

    async def _run(self, job_id: str, load_only: bool) -> None:
        try:
            if load_only:
                record = self.store.get(job_id)
                if record is not None:
                    await self._load_voice(record)
                return
            async with self._slots:
                record = self.store.get(job_id)
                # A slot freed by stop() cancelling a training must not start the next one: it stays queued.
                if record is None or record.job.status != "queued" or self._stopping:
                    return
                if await self._train(record):
                    await self._load_voice(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s failed", job_id)
            record = self.store.get(job_id)
            if record is not None and not self._stopping:
                self._fail(record, f"internal error: {exc}")
        finally:
            if self._tasks.get(job_id) is asyncio.current_task():
                del self._tasks[job_id]

    def _output_dir(self, job_id: str) -> Path:
        return self.settings.job_dir(job_id) / "output"

    async def _train(self, record: JobRecord) -> bool:
        """Run `vft train` for the job; True when it produced a checkpoint."""
        job, request = record.job, record.request
        record.attempts += 1
        tracker = StageTimer(self.opslog, job.job_id)
        self._set_status(record, "preparing", Progress(stage="preparing", total_epochs=request.num_epochs))
        tracker.enter("preparing")
        dataset = record.upload_path or request.dataset_s3_key
        if record.upload_path and not Path(record.upload_path).is_file():
            self._fail(record, "the uploaded dataset is gone (deleted from the data folder); resubmit it")
            return False
        train_request = TrainRequest(
            job_id=job.job_id,
            dataset=dataset,
            speaker_name=request.speaker_name,
            num_epochs=request.num_epochs,
            batch_size=request.batch_size,
            lr=request.lr,
            output_dir=self._output_dir(job.job_id).resolve(),
            resume_from=await self._resume_source(record),
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
            self._persist(record)
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
            self._fail(record, outcome.error or "training failed")
            return False
        done = outcome.last_event or {}
        if not done.get("checkpoint_path"):
            self._fail(record, "vft train finished without naming a checkpoint")
            return False
        record.checkpoint_dir = str(Path(done["checkpoint_path"]).resolve())
        record.s3_prefix = done.get("s3_prefix")
        return True

    async def _resume_source(self, record: JobRecord) -> str | None:
        """The checkpoint to resume from: the earlier job's local folder, else its S3 prefix, else None + a warning."""
        resume_id = record.request.resume_job_id
        if not resume_id:
            return None
        earlier = self.store.get(resume_id)
        if earlier is not None and earlier.checkpoint_dir and Path(earlier.checkpoint_dir).is_dir():
            return earlier.checkpoint_dir
        if self.storage.configured:
            prefix = earlier.s3_prefix if earlier is not None and earlier.s3_prefix else checkpoint_prefix(resume_id)
            try:
                if await asyncio.to_thread(lambda: next(iter(self.storage.list(prefix.rstrip("/") + "/")), None)):
                    return prefix
            except Exception as exc:
                log.warning("cannot look up checkpoint %s: %s", prefix, exc)
        self._warn(record, f"resume_job_id {resume_id!r} has no checkpoint; training starts from the base model")
        return None

    def _on_event(self, record: JobRecord, event: ProgressEvent, tracker: StageTimer) -> None:
        stage = event["stage"]
        tracker.enter(stage)
        if event.get("warning"):
            self._warn(record, str(event["warning"]), save=False)
        if stage == "failed":
            return
        record.job.progress = Progress(
            stage=stage,
            epoch=_int(event.get("epoch")),
            total_epochs=_int(event.get("total_epochs"), record.request.num_epochs),
            step=_int(event.get("step")),
            loss=_float(event.get("loss")),
            global_step=_int(event.get("global_step")),
        )
        status = STAGE_STATUS.get(stage, record.job.status)
        if status != record.job.status:
            self._set_status(record, status, record.job.progress)
        elif time.monotonic() - self._saved_at.get(record.job.job_id, 0.0) >= PROGRESS_SAVE_INTERVAL:
            self._persist(record)

    async def _load_voice(self, record: JobRecord) -> None:
        job = record.job
        self._set_status(record, "loading", job.progress)
        try:
            await self.voices.register_voice(
                job.job_id,
                record.request.speaker_name,
                checkpoint_path=record.checkpoint_dir,
                s3_prefix=record.s3_prefix,
                preload=True,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("loading the voice of job %s failed", job.job_id)
            self._fail(record, f"the trained voice could not be loaded for inference: {exc}")
            return
        if job.job_id not in self.store:
            return
        job.inference_url = f"/infer/{job.job_id}"
        job.checkpoint_path = self._relative_to_data(record.checkpoint_dir)
        self._purge_upload(record)
        self._set_status(record, "ready", job.progress)
        await self._prune_disk()

    async def _prune_disk(self) -> None:
        prune = getattr(self.voices, "prune_disk", None)
        if prune is None:
            return
        try:
            result = prune()
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("disk prune after training failed")

    def _relative_to_data(self, path: str | None) -> str | None:
        if path is None:
            return None
        try:
            return Path(path).resolve().relative_to(self.settings.data_dir.resolve()).as_posix()
        except ValueError:
            return path

    def _purge_upload(self, record: JobRecord) -> None:
        if record.upload_path:
            Path(record.upload_path).unlink(missing_ok=True)
            record.upload_path = None

    # --- record bookkeeping ----------------------------------------------------------------------------------

    def _set_status(self, record: JobRecord, status: str, progress: Progress | None) -> None:
        record.job.status = status
        record.job.progress = progress
        self._persist(record)
        if status in TERMINAL_STATUSES:
            JOBS_FINISHED.labels(status=status).inc()
            JOB_DURATION.labels(status=status).observe(time.time() - (record.job.created_at or time.time()))

    def _fail(self, record: JobRecord, error: str) -> None:
        record.job.error = error
        self._purge_upload(record)
        self._set_status(record, "failed", record.job.progress)

    def _warn(self, record: JobRecord, warning: str, save: bool = True) -> None:
        if warning not in record.job.warnings:
            record.job.warnings.append(warning)
            if save:
                self._persist(record)

    def _persist(self, record: JobRecord) -> None:
        if record.job.job_id not in self.store:  # deleted meanwhile: never bring it back
            return
        record.job.updated_at = time.time()
        self._saved_at[record.job.job_id] = time.monotonic()
        self.store.save(record)


class StageTimer:
    """Turns stage transitions into ops-log durations: ``prepare_data`` (preparing) and ``training``."""

    OPS = {"preparing": "prepare_data", "training": "training"}

    def __init__(self, opslog: OpsLog, job_id: str):
        self.opslog = opslog
        self.job_id = job_id
        self.stage: str | None = None
        self.since = 0.0

    def enter(self, stage: str) -> None:
        if stage == self.stage:
            return
        self._close(ok=stage != "failed")
        self.stage, self.since = stage, time.monotonic()

    def finish(self, ok: bool) -> None:
        self._close(ok)
        self.stage = None

    def _close(self, ok: bool) -> None:
        op = self.OPS.get(self.stage or "")
        if op is not None:
            self.opslog.record(op, time.monotonic() - self.since, self.job_id, ok=ok)
            self.stage = None


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
