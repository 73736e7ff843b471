"""The training job, stage by stage: preparing → training → uploading → done (or failed).

- preparing: fetch the dataset zip (S3 key or local path) into the job folder, check and extract it, resample to
  24 kHz, find the resume checkpoint (falling back to the base model with a warning), encode audio codes.
- training: the SFT loop (`sft.train`), one checkpoint per epoch; optimizer state is purged afterwards.
- uploading: the final checkpoint to ``checkpoints/{job_id}`` on S3, verified; the local copy stays.

Whatever happens, the raw dataset is removed from the job folder at the end. Every event carries the six
progress fields, and once the base model is loaded ``flash_attn`` (whether it runs with flash attention); the last
one is ``done`` (with ``checkpoint_path`` and, when uploaded, ``s3_prefix``) or ``failed`` (with an ``error``
saying what to fix). Heavy imports (torch, qwen_tts) wait until the inputs are known to be good, so bad input
fails in about a second.
"""

from __future__ import annotations

import gc
import logging
import shutil
import time
from pathlib import Path
from typing import Any, get_args

from botocore.exceptions import BotoCoreError, ClientError

from voicefinetune.checkpoints import (
    CHECKPOINT_PREFIX,
    CONFIG_FILE,
    has_model,
    list_checkpoints,
    newest_checkpoint,
    training_output_dir,
)
from voicefinetune.dataset import Dataset, DatasetLimits, open_dataset
from voicefinetune.diskfull import DiskFull, is_disk_full
from voicefinetune.lifecycle import STAGE_DONE, STAGE_FAILED, STAGE_PREPARING, STAGE_TRAINING, STAGE_UPLOADING
from voicefinetune.public_text import PublicText
from voicefinetune.schemas import (
    MAX_LORA_RANK,
    InvalidInput,
    TrainMethod,
    check_language,
    check_speaker_name,
    is_segment_id,
)
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage, StorageError, UnsafeKey, build_key, checkpoint_prefix
from voicefinetune.train_request import TrainRequest
from voicefinetune_trainer.progress import Progress
from voicefinetune_trainer.reporter import Event, Reporter

log = logging.getLogger(__name__)

UPLOAD_ATTEMPTS = 3
UPLOAD_BACKOFF_SECONDS = 1.0


class JobFailed(Exception):
    """A failure the user can act on; the message says what to fix."""


class JobInterrupted(JobFailed):
    """A signal stopped the job (cancelled, or its pod deleted)."""


def check_request(request: TrainRequest) -> None:
    if not is_segment_id(request.job_id):  # it names a folder and an S3 prefix
        raise InvalidInput(
            f"--job-id {request.job_id!r} must be letters, digits, '.', '_' or '-' (128 at most)"
        )
    try:
        check_speaker_name(request.speaker_name)
    except InvalidInput as exc:
        raise InvalidInput(f"--speaker-name: {exc}") from exc
    if request.num_epochs < 1:
        raise InvalidInput(f"--num-epochs must be at least 1; got {request.num_epochs}")
    if request.batch_size < 1:
        raise InvalidInput(f"--batch-size must be at least 1; got {request.batch_size}")
    if not 0 < request.lr <= 1:
        raise InvalidInput(f"--lr must be in (0, 1]; got {request.lr}")
    if request.gradient_accumulation_steps < 1:
        raise InvalidInput(
            f"--gradient-accumulation-steps must be at least 1; got {request.gradient_accumulation_steps}"
        )
    try:
        check_language(request.language)
    except InvalidInput as exc:
        raise InvalidInput(f"--language: {exc}") from exc
    if request.method not in get_args(TrainMethod):
        raise InvalidInput(
            f"--method must be one of {', '.join(get_args(TrainMethod))}; got {request.method!r}"
        )
    if not 1 <= request.lora_rank <= MAX_LORA_RANK:
        raise InvalidInput(f"--lora-rank must be in 1..{MAX_LORA_RANK}; got {request.lora_rank}")
    if request.lora_alpha is not None and request.lora_alpha < 1:
        raise InvalidInput(f"--lora-alpha must be at least 1; got {request.lora_alpha}")
    if not request.dataset.strip():
        raise InvalidInput("--dataset must name an S3 key or a local .zip file")


class TrainingPipeline:
    def __init__(
        self,
        request: TrainRequest,
        settings: Settings,
        reporter: Reporter,
        storage: Storage | None = None,
        limits: DatasetLimits | None = None,
    ):
        self.request = request
        self.settings = settings
        self.storage = storage or Storage(settings)
        self.progress = Progress(reporter, request.job_id, request.num_epochs, public=PublicText.of(settings))
        self.job_dir = settings.job_dir(request.job_id)
        self.output_dir = request.output_dir or training_output_dir(settings, request.job_id)
        self.dataset_dir = self.job_dir / "dataset"
        self.resume_dir = self.job_dir / "resume"
        self.limits = limits or DatasetLimits()

    # --- the whole job -------------------------------------------------------------------------------------

    def run(self) -> Event:
        """Run every stage; return the last event (``done`` or ``failed``). Never raises for job failures."""
        checkpoint: Path | None = None
        try:
            check_request(self.request)
            samples, base_model, resume_from, model = self.prepare()
            checkpoint = self.train(samples, base_model, resume_from, model)
            del samples, model
            s3_prefix = self.upload(checkpoint)
            shutil.rmtree(self.resume_dir, ignore_errors=True)  # kept on failure: a rerun may resume from it
            return self.progress.enter(
                STAGE_DONE,
                checkpoint_path=str(checkpoint),
                s3_prefix=s3_prefix,
                timings=self.progress.timings,
                message="checkpoint published"
                if s3_prefix
                else "checkpoint kept locally (S3 not configured)",
            )
        except (InvalidInput, JobFailed, StorageError, UnsafeKey, DiskFull) as exc:
            return self._failed(str(exc), checkpoint)
        except (Exception, KeyboardInterrupt) as exc:
            log.exception("%s failed", self.progress.stage)
            if is_disk_full(exc):
                return self._failed(str(DiskFull(f"the {self.progress.stage} stage's files")), checkpoint)
            return self._failed(f"{self.progress.stage} failed: {type(exc).__name__}: {exc}", checkpoint)
        finally:
            self.purge_inputs()

    def _failed(self, error: str, checkpoint: Path | None) -> Event:
        return self.progress.enter(
            STAGE_FAILED,
            error=error,
            failed_stage=self.progress.stage,
            timings=self.progress.timings,
            checkpoint_path=str(checkpoint) if checkpoint and checkpoint.exists() else None,
        )

    def purge_inputs(self) -> None:
        """Remove the raw dataset (zip, extracted files): whatever happened, only model weights stay."""
        shutil.rmtree(self.dataset_dir, ignore_errors=True)

    # --- preparing -----------------------------------------------------------------------------------------

    def prepare(self) -> tuple[list[Any], str, Path | None, Any]:
        """Fetch and check the dataset, find the resume checkpoint, load the base model and encode the audio codes
        with it (the same loaded model then trains)."""
        self.progress.enter(STAGE_PREPARING, message=f"fetching dataset {self.request.dataset}")
        dataset = open_dataset(self.fetch_dataset(), self.dataset_dir / "files", self.limits)
        self.progress.event(
            message=f"dataset checked: {len(dataset.entries)} clips, {dataset.total_seconds:.1f} s of audio"
        )
        base_model = self.request.base_model or self._default_base_model()
        resume_from = self.find_resume_checkpoint(base_model)
        model = self.load_base_model(base_model, self._recipe())
        return self.encode(dataset, model), base_model, resume_from, model

    def _default_base_model(self) -> str:
        from voicefinetune.qwen import resolve_model

        return resolve_model(self.settings, "base")

    def fetch_dataset(self) -> Path:
        """The dataset zip on local disk: the given file, or the S3 object downloaded into the job folder."""
        value = self.request.dataset.strip()
        local = Path(value).expanduser()
        if local.is_file():
            return local
        if local.is_absolute() or value.startswith(("./", "../", "~")):
            raise JobFailed(f"dataset file {value} does not exist: give an existing .zip path or an S3 key")
        if not self.storage.configured:
            raise JobFailed(
                f"dataset {value!r} is not a local file and S3 is not configured: "
                "set E2E_ACCESS_KEY/E2E_SECRET_KEY or pass a local .zip path"
            )
        key = self._s3_key(value)
        target = self.dataset_dir / "dataset.zip"
        try:
            self.storage.download_file(key, target)
        except FileNotFoundError as exc:
            raise JobFailed(
                f"dataset s3://{self.storage.bucket}/{key} does not exist: upload the zip there or fix the key"
            ) from exc
        return target

    def _s3_key(self, value: str) -> str:
        """An S3 key from ``key`` or ``s3://bucket/key`` (the configured bucket only)."""
        if value.startswith("s3://"):
            bucket, _, key = value[len("s3://") :].partition("/")
            if bucket != self.storage.bucket:
                raise JobFailed(
                    f"{value} is in bucket {bucket!r}; this trainer reads bucket {self.storage.bucket!r}"
                )
            value = key
        try:
            return build_key(value.strip("/"))
        except UnsafeKey as exc:
            raise JobFailed(f"S3 key {value!r} is not usable: {exc}") from exc

    def find_resume_checkpoint(self, base_model: str) -> Path | None:
        """The checkpoint to continue from, or None (with a warning event) when it cannot be found."""
        wanted = self.request.resume_from
        if not wanted:
            return None
        try:
            found = self._resume_folder(wanted)
        except (FileNotFoundError, StorageError, UnsafeKey, JobFailed) as exc:
            self.progress.event(
                warning=f"resume checkpoint {wanted} not found ({exc}); training starts from the base model {base_model}"
            )
            return None
        self.progress.event(message=f"resuming from {wanted}")
        return found

    def _resume_folder(self, wanted: str) -> Path:
        """A local folder, else an S3 prefix; a bare job id also names that job's output folder or S3 prefix."""
        local = Path(wanted).expanduser()
        is_job_id = is_segment_id(wanted)
        if local.exists():
            return latest_checkpoint(local)
        if is_job_id and training_output_dir(self.settings, wanted).is_dir():
            return latest_checkpoint(training_output_dir(self.settings, wanted))
        if not self.storage.configured:
            raise FileNotFoundError(f"no folder {wanted} here and S3 is not configured")
        prefixes = [self._s3_key(wanted)] + ([checkpoint_prefix(wanted)] if is_job_id else [])
        for prefix in prefixes:
            try:
                self.storage.download_dir(prefix, self.resume_dir)
            except FileNotFoundError:
                continue
            return latest_checkpoint(self.resume_dir)
        where = " or ".join(f"s3://{self.storage.bucket}/{p}/" for p in prefixes)
        raise FileNotFoundError(f"no local folder {wanted} and nothing under {where}")

    def _recipe(self) -> str:
        from voicefinetune_trainer.recipe import LORA_RECIPE

        return LORA_RECIPE if self.request.method == "lora" else self.settings.train_recipe

    def _lora(self) -> Any:
        from voicefinetune_trainer.lora import LoraSettings

        if self.request.method != "lora":
            return None
        return LoraSettings(self.request.lora_rank, self.request.lora_alpha, self.request.lora_targets)

    def load_base_model(self, base_model: str, recipe: str) -> Any:
        """The Base model, loaded; from now on every event says whether it runs with flash attention (only the
        trainer knows: a flash_attn that fails to load falls back to sdpa)."""
        from voicefinetune.qwen import loaded_runtime
        from voicefinetune_trainer.sft import load_base_model

        try:
            model = load_base_model(base_model, self.settings, recipe)
        except ValueError as exc:  # not a Base checkpoint
            raise JobFailed(str(exc)) from exc
        self.progress.flash_attention = loaded_runtime(model).flash_attention
        return model

    def encode(self, dataset: Dataset, model: Any) -> list[Any]:
        from voicefinetune_trainer.codes import encode_samples
        from voicefinetune_trainer.prepare import assign_layouts

        clips = dataset.clips()  # nothing decoded yet: each clip's audio is decoded in its encoding batch
        self.progress.event(message=f"encoding audio codes of {len(clips)} clips")
        samples = encode_samples(model, ((clip.text, clip.audio, clip.ref_audio) for clip in clips))
        default = check_language(self.request.language)
        return assign_layouts(samples, [clip.language or default for clip in clips])

    # --- training ------------------------------------------------------------------------------------------

    def train(self, samples: list[Any], base_model: str, resume_from: Path | None, model: Any) -> Path:
        from voicefinetune_trainer.checkpoint import ResumeCheckpointError, purge_training_state
        from voicefinetune_trainer.sft import TrainConfig, WontFit, train

        self.progress.enter(STAGE_TRAINING, message=f"training on {len(samples)} clips")
        resume_from = self._clear_earlier_checkpoints(resume_from)
        config = TrainConfig(
            speaker_name=self.request.speaker_name,
            num_epochs=self.request.num_epochs,
            batch_size=self.request.batch_size,
            lr=self.request.lr,
            output_dir=self.output_dir,
            resume_from=resume_from,
            gradient_accumulation_steps=self.request.gradient_accumulation_steps,
            recipe=self._recipe(),
            lora=self._lora(),
            base_model=base_model,
        )
        try:
            checkpoint = Path(
                train(
                    base_model,
                    samples,
                    config=config,
                    settings=self.settings,
                    on_step=self.progress.training_step,
                    tts=model,
                )
            )
        except ResumeCheckpointError as exc:
            raise JobFailed(f"cannot resume from {resume_from}: {exc}") from exc
        except WontFit as exc:
            raise JobFailed(str(exc)) from exc
        purge_training_state(self.output_dir)
        _free_memory()
        return checkpoint

    def _clear_earlier_checkpoints(self, resume_from: Path | None) -> Path | None:
        """Remove checkpoints an earlier run left in the output folder, so that the final checkpoint is this
        run's; a resume source among them moves to the job's resume folder first."""
        if not self.output_dir.is_dir():
            return resume_from
        if resume_from is not None and resume_from.resolve().is_relative_to(self.output_dir.resolve()):
            shutil.rmtree(self.resume_dir, ignore_errors=True)
            resume_from.rename(self.resume_dir)
            resume_from = self.resume_dir
        for _, folder in list_checkpoints(self.output_dir):
            shutil.rmtree(folder)
        return resume_from

    # --- uploading -----------------------------------------------------------------------------------------

    def upload(self, checkpoint: Path) -> str | None:
        if not self.storage.configured:
            return None
        prefix = checkpoint_prefix(self.request.job_id)
        where = f"s3://{self.storage.bucket}/{prefix}"
        self.progress.enter(STAGE_UPLOADING, message=f"publishing {checkpoint} to {where}")
        cleared = False
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                if not cleared:
                    # Objects of an earlier run under this prefix would survive a same-size upload.
                    self._clear_prefix(prefix)
                    cleared = True
                self.storage.upload_dir(checkpoint, prefix, attempts=1)  # uploads, then verifies every size
                return prefix
            except StorageError as exc:
                reason = exc.__cause__ or exc  # upload_dir's own wrapping adds nothing with one attempt
                if attempt == UPLOAD_ATTEMPTS:
                    raise JobFailed(
                        f"could not publish the checkpoint to {where} at {self.storage.endpoint} after "
                        f"{UPLOAD_ATTEMPTS} attempts (last error: {reason}). The local checkpoint is kept at "
                        f"{checkpoint}: check E2E_ENDPOINT_URL and the S3 credentials, then run the job again"
                    ) from exc
                delay = UPLOAD_BACKOFF_SECONDS * attempt
                self.progress.event(
                    warning=f"upload attempt {attempt}/{UPLOAD_ATTEMPTS} failed ({reason}); retrying in {delay:g} s"
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _clear_prefix(self, prefix: str) -> None:
        try:
            self.storage.delete_prefix(prefix + "/")
        except (BotoCoreError, ClientError) as exc:  # delete_prefix lets the delete call's errors through
            raise StorageError(f"S3 delete under s3://{self.storage.bucket}/{prefix}/ failed: {exc}") from exc


def latest_checkpoint(folder: Path) -> Path:
    """``folder`` itself when it is a checkpoint, else its highest ``checkpoint-epoch-N``."""
    if has_model(folder):
        return folder
    newest = newest_checkpoint(folder)
    if newest is None:
        raise FileNotFoundError(f"{folder} holds no checkpoint ({CONFIG_FILE} or {CHECKPOINT_PREFIX}N/)")
    return newest


def _free_memory() -> None:
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_training(
    request: TrainRequest, *, settings: Settings, reporter: Reporter, limits: DatasetLimits | None = None
) -> Event:
    """Run one training job; returns its last event."""
    return TrainingPipeline(request, settings, reporter, limits=limits).run()
