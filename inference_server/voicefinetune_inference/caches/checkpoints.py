"""Where a voice's model lives: its registered checkpoint folder, the trainer's default output, or S3."""

from __future__ import annotations

from pathlib import Path

from voicefinetune.checkpoints import CHECKPOINT_PREFIX, has_model, newest_checkpoint, training_output_dir
from voicefinetune.public_text import PublicText
from voicefinetune.schemas import InvalidInput
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage, UnsafeKey, build_key, checkpoint_prefix
from voicefinetune_inference.caches.disk_cache import is_inside
from voicefinetune_inference.caches.registry import Voice

RESTORED_FOLDER = "checkpoint"  # jobs/{id}/checkpoint: where a voice registered only by S3 prefix lands


class CheckpointLocator:
    def __init__(self, settings: Settings, storage: Storage):
        self.settings = settings
        self.storage = storage

    def trainer_checkpoint(self, job_id: str) -> tuple[str | None, str | None]:
        """(checkpoint_path, s3_prefix) where ``vft train --job-id {job_id}`` leaves its model by default."""
        output = training_output_dir(self.settings, job_id)
        newest = newest_checkpoint(output)
        if newest is not None:
            return str(newest.absolute()), None
        prefix = checkpoint_prefix(job_id)
        if self.storage.configured and next(iter(self.storage.list(prefix + "/")), None) is not None:
            return None, prefix
        raise InvalidInput(
            f"no checkpoint found for job {job_id!r}: neither {self.display_path(output)}/{CHECKPOINT_PREFIX}N on disk nor "
            f"{prefix}/ on S3; give checkpoint_path (a local model folder) or s3_prefix (where S3 holds it)"
        )

    def checkpoint_path(self, job_id: str, checkpoint_path: str | None) -> str | None:
        """Absolute folder inside the job's own folder (``jobs/{job_id}/...``): a relative path (like the original
        service's ``jobs/{id}/output/checkpoint-epoch-9``) is taken relative to the data folder. Anything else
        (``..``, another job's folder, a folder outside the jobs folder, even through a symbolic link) is refused:
        the disk LRU and S3 restores work on this folder, so it must be the job's own."""
        if not checkpoint_path:
            return None
        path = Path(checkpoint_path)
        if ".." in path.parts:
            raise InvalidInput(f"checkpoint_path {checkpoint_path!r} must not contain '..'")
        if not path.is_absolute():
            path = self.settings.data_dir / path
        if not is_inside(path, self.settings.job_dir(job_id)):
            raise InvalidInput(
                f"checkpoint_path {checkpoint_path!r} must be a folder inside the job's own folder "
                f"jobs/{job_id}/ (e.g. jobs/{job_id}/output/checkpoint-epoch-9)"
            )
        return str(path.absolute())

    @staticmethod
    def own_s3_prefix(job_id: str, s3_prefix: str | None) -> str | None:
        """``s3_prefix`` when it is the job's own checkpoint prefix (``checkpoints/{job_id}``) or under it."""
        if not s3_prefix:
            return None
        try:
            prefix = build_key(s3_prefix.strip("/"))
        except UnsafeKey as exc:
            raise InvalidInput(f"s3_prefix {s3_prefix!r}: {exc}") from exc
        own = checkpoint_prefix(job_id)
        if prefix != own and not prefix.startswith(own + "/"):
            raise InvalidInput(
                f"s3_prefix {s3_prefix!r} must be the job's own checkpoint prefix {own} (or under it)"
            )
        return prefix

    def model_folder(self, voice: Voice) -> Path:
        """Where the voice's model is read from: its checkpoint folder, or (when that lies outside the jobs
        folder and is gone, or was never given) ``jobs/{id}/checkpoint``, which an S3 restore fills."""
        if voice.checkpoint_path:
            path = Path(voice.checkpoint_path)
            if has_model(path) or is_inside(path, self.settings.jobs_dir):
                return path
        return self.settings.job_dir(voice.job_id) / RESTORED_FOLDER

    @staticmethod
    def s3_prefix(voice: Voice) -> str:
        """Where S3 holds (or would hold) the voice's checkpoint: as registered, else the trainer's convention."""
        return voice.s3_prefix or checkpoint_prefix(voice.job_id)

    def display_path(self, path: Path | str) -> str:
        """A server folder as clients see it: relative to the data folder."""
        return PublicText.of(self.settings).path(path)
