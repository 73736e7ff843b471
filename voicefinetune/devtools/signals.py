"""Deterministic speech-like signals: what the tiny models' codebooks and speaker encoder are calibrated on."""

from __future__ import annotations

import numpy as np

from ..schemas import SAMPLE_RATE


def synthetic_voice(seed: int, seconds: float = 1.2, f0: float | None = None) -> np.ndarray:
    """A speech-like 24 kHz clip: a vibrato harmonic series with formant-ish weights, syllable envelope and
    noise bursts. Deterministic in `seed`; peak 0.5."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = f0 or float(rng.uniform(90, 260))
    pitch = f0 * (1 + 0.06 * np.sin(2 * np.pi * rng.uniform(3, 6) * t) + 0.1 * rng.uniform(-1, 1) * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    formants = rng.uniform(300, 3000, size=3)
    wave = np.zeros(n)
    for h in range(1, 16):
        weight = sum(np.exp(-((((h * f0) - f) / 250) ** 2)) for f in formants) + 0.05 / h
        wave += weight * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    syllables = 0.5 * (1 - np.cos(2 * np.pi * rng.uniform(3, 5) * t))
    noise = rng.standard_normal(n) * (rng.uniform(size=n // 2400 + 1).repeat(2400)[:n] > 0.7)
    wave = wave * syllables + 0.3 * noise
    return (0.5 * wave / (np.abs(wave).max() + 1e-9)).astype(np.float32)
