"""What audio the project accepts, checked from the file header (``soundfile.info``) before anything is decoded:
a small compressed file can declare hours of many-channel, high-rate audio that would fill memory once decoded."""

from __future__ import annotations

from typing import Any

MAX_CHANNELS = 2
MAX_SAMPLE_RATE = 48_000
MAX_REF_SECONDS = 60.0  # a voice-clone reference clip
MAX_CLIP_SECONDS = 30.0  # a dataset clip


def audio_refusal(info: Any, *, what: str, max_seconds: float) -> str | None:
    """Why audio with this header is refused (a message naming ``what``), or None when it is acceptable."""
    if info.channels > MAX_CHANNELS:
        return f"{what} has {info.channels} channels; at most {MAX_CHANNELS} (mono or stereo) are accepted"
    if info.samplerate > MAX_SAMPLE_RATE:
        return f"{what} is sampled at {info.samplerate} Hz; at most {MAX_SAMPLE_RATE} Hz is accepted"
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    if seconds > max_seconds:
        return f"{what} lasts {seconds:.1f} s; at most {max_seconds:g} s is accepted"
    return None
