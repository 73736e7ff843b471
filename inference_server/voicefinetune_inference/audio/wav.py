"""WAV encoding of generated waveforms (16-bit PCM, the original service's 24 kHz) and reference-audio decoding."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from voicefinetune.audio_limits import MAX_REF_SECONDS, audio_refusal
from voicefinetune.schemas import SAMPLE_RATE


class NotAudio(ValueError):
    """Bytes that no audio decoder understands."""


def to_wav_bytes(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    samples = np.clip(np.asarray(waveform, dtype=np.float32).reshape(-1), -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def duration_seconds(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    return float(np.asarray(waveform).reshape(-1).shape[0]) / float(sample_rate)


def wav_duration_seconds(wav: bytes) -> float:
    """Length of a WAV file's audio, from its header."""
    return float(sf.info(io.BytesIO(wav)).duration)


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """(mono float32 waveform, sample rate) from a WAV/FLAC/OGG file's bytes."""
    try:
        with io.BytesIO(data) as handle:
            refusal = audio_refusal(sf.info(handle), what="reference audio", max_seconds=MAX_REF_SECONDS)
            if refusal:
                raise NotAudio(refusal)
            handle.seek(0)
            audio, sample_rate = sf.read(handle, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise NotAudio(f"reference audio is not a readable audio file (WAV, FLAC or OGG): {exc}") from exc
    if audio.ndim > 1:
        audio = audio.mean(axis=-1)
    if audio.size == 0:
        raise NotAudio("reference audio contains no samples")
    return audio.astype(np.float32), int(sample_rate)
