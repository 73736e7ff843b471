"""Service errors and the HTTP status each maps to (the original service's: 404 unknown, 409 not ready, 503 no storage)."""

from __future__ import annotations

from ..schemas import InvalidInput
from ..storage import StorageError, StorageNotConfigured, UnsafeKey
from .ref_audio import RefAudioError


class VoiceNotFound(LookupError):
    """No voice is registered for this job id."""


class VoiceNotReady(RuntimeError):
    """The voice is registered but cannot be served now (no checkpoint on disk nor in S3, wrong checkpoint)."""


class ModelLoadFailed(RuntimeError):
    """A checkpoint that should load did not (a genuine internal failure)."""


def status_for(exc: BaseException) -> int:
    if isinstance(exc, VoiceNotFound):
        return 404
    if isinstance(exc, VoiceNotReady):
        return 409
    if isinstance(exc, StorageNotConfigured):
        return 503
    if isinstance(exc, InvalidInput | UnsafeKey | RefAudioError):
        return 400
    if isinstance(exc, StorageError):
        return 502
    return 500


def message_for(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if status_for(exc) == 500 and not isinstance(exc, ModelLoadFailed):
        return f"internal error during inference: {type(exc).__name__}: {text}"
    return text
