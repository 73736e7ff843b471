"""Service errors and the HTTP status each maps to (the original service's: 404 unknown, 409 not ready, 503 no storage)."""

from __future__ import annotations

from voicefinetune.error_ids import internal_error_message
from voicefinetune.schemas import InvalidInput
from voicefinetune.storage import StorageError, StorageNotConfigured, UnsafeKey


class RefAudioError(ValueError):
    """The reference audio cannot be used; the message says why (the API answers 400)."""


class VoiceNotFound(LookupError):
    """No voice is registered for this job id."""


class VoiceDeleted(VoiceNotFound):
    """The voice was unregistered (its job deleted) while a request for it waited or ran."""

    @classmethod
    def of(cls, job_id: str) -> VoiceDeleted:
        return cls(f"job {job_id!r} was deleted: its voice is no longer served, and this request was stopped")


class VoiceNotReady(RuntimeError):
    """The voice is registered but cannot be served now (no checkpoint on disk nor in S3, wrong checkpoint)."""


class ServerBusy(RuntimeError):
    """No capacity frees up in time (every VRAM model slot stays in use): retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class ModelLoadFailed(RuntimeError):
    """A checkpoint that should load did not (a genuine internal failure)."""


def status_for(exc: BaseException) -> int:
    if isinstance(exc, VoiceNotFound):
        return 404
    if isinstance(
        exc, VoiceNotReady | FileExistsError
    ):  # FileExistsError: a restore that would overwrite a folder
        return 409
    if isinstance(exc, StorageNotConfigured | ServerBusy):
        return 503
    if isinstance(exc, InvalidInput | UnsafeKey | RefAudioError):
        return 400
    if isinstance(exc, StorageError):
        return 502
    return 500


def message_for(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if status_for(exc) == 500:  # the text stays in the log: it may name paths and internals
        return internal_error_message(exc, "the inference request")
    return text
