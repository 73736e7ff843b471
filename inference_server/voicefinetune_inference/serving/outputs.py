"""Where generated audio goes: S3 objects under the original service's keys, answered with permanent and presigned URLs."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

from voicefinetune.opslog import OpsLog
from voicefinetune.schemas import SAMPLE_RATE, InferS3Response, InlineAudioResponse
from voicefinetune.storage import Storage, StorageNotConfigured
from voicefinetune_inference import metrics
from voicefinetune_inference.audio.wav import wav_duration_seconds

KEPT_NOTE = (
    "an object already existed under s3_key and was kept (overwrite: false); its audio was not generated "
    "from this text: send overwrite: true to replace it"
)


def auto_filename(prefix: str = "tts") -> str:
    return f"{prefix}_{int(time.time() * 1000)}_{uuid.uuid4().hex[:8]}.wav"


def inline_audio(wav: bytes, *, text: str, filename: str | None, job_id: str | None) -> InlineAudioResponse:
    """A WAV answered inside a JSON batch result instead of uploaded."""
    return InlineAudioResponse(
        audio_base64=base64.b64encode(wav).decode("ascii"),
        sample_rate=SAMPLE_RATE,
        duration_seconds=round(wav_duration_seconds(wav), 3),
        text=text,
        filename=filename,
        job_id=job_id,
    )


class AudioOutputs:
    def __init__(self, storage: Storage, opslog: OpsLog):
        self.storage = storage
        self.opslog = opslog

    def require_storage(self) -> None:
        if not self.storage.configured:
            raise StorageNotConfigured(
                "S3 storage is not configured (set E2E_ACCESS_KEY and E2E_SECRET_KEY), so audio cannot be "
                "uploaded; ask for the WAV instead (upload_to_s3: false) where the endpoint offers it"
            )

    def response(self, key: str, text: str, job_id: str | None) -> InferS3Response:
        return InferS3Response(
            s3_url=self.storage.url(key),
            presigned_url=self.storage.presigned_url(key),
            s3_key=key,
            sample_rate=SAMPLE_RATE,
            text=text,
            job_id=job_id,
        )

    async def kept(
        self, key: str | None, *, overwrite: bool, text: str, job_id: str | None
    ) -> InferS3Response | None:
        """The answer for an object already under ``key`` that is kept (``overwrite`` false), else None."""
        if key is None or overwrite or not await asyncio.to_thread(self.storage.exists, key):
            return None
        return self.response(key, text, job_id).model_copy(update={"kept_existing": True, "note": KEPT_NOTE})

    async def upload(self, key: str, wav: bytes, *, text: str, job_id: str | None) -> InferS3Response:
        def put() -> None:
            started = time.monotonic()
            with self.opslog.track("s3_upload", job_id=job_id, key=key, bytes=len(wav)):
                self.storage.upload_bytes(wav, key)
            metrics.S3_UPLOAD_SECONDS.observe(time.monotonic() - started)

        uploading = asyncio.ensure_future(asyncio.to_thread(put))
        try:
            await asyncio.shield(uploading)
        except (
            asyncio.CancelledError
        ):  # the thread cannot stop: let the request end only once nothing lands later
            await asyncio.wait([uploading])
            uploading.exception()  # retrieved: its failure no longer matters to anyone
            raise
        return self.response(key, text, job_id)
