"""Audio at the models' rate: dataset clips, reference audio and generated speech all become mono float32 at 24 kHz
here, with soxr's high quality (the resampler librosa uses by default, without librosa's slow import)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .schemas import SAMPLE_RATE


def to_sample_rate(wave: Any, rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A mono waveform at ``rate`` as float32 at ``sample_rate``."""
    wave = np.asarray(wave, dtype=np.float32)
    if int(rate) == sample_rate or not len(wave):
        return wave
    import soxr

    return np.asarray(soxr.resample(wave, int(rate), sample_rate, quality="HQ"), dtype=np.float32)


def resampled_length(frames: int, rate: int, sample_rate: int = SAMPLE_RATE) -> int:
    """How many samples ``to_sample_rate`` gives for ``frames`` at ``rate`` (soxr rounds half up)."""
    return frames if rate == sample_rate else (2 * frames * sample_rate + rate) // (2 * rate)
