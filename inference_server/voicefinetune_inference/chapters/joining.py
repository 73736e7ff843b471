"""Segments joined into one chapter: each brought to one loudness, faded in and out (no clicks at the joins), with
its pause of silence after it; every segment's start and end come from the samples written."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voicefinetune.schemas import SAMPLE_RATE

FADE_SECONDS = 0.01
TARGET_RMS = 0.1  # -20 dBFS: speech of every voice at one level
MAX_GAIN = 10.0  # +20 dB at most, so near-silence is not blown up into noise
PEAK = 0.98


@dataclass(frozen=True)
class Placed:
    start: int  # samples
    end: int


def levelled(samples: np.ndarray) -> np.ndarray:
    """``samples`` at the target loudness (RMS), peaks kept below full scale, faded in and out."""
    out = np.asarray(samples, dtype=np.float32).reshape(-1).copy()
    if out.size == 0:
        return out
    rms = float(np.sqrt(np.mean(np.square(out, dtype=np.float64))))
    if rms > 0:
        out *= min(TARGET_RMS / rms, MAX_GAIN)
    peak = float(np.max(np.abs(out)))
    if peak > PEAK:
        out *= PEAK / peak
    fade = min(int(FADE_SECONDS * SAMPLE_RATE), out.size // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        out[:fade] *= ramp
        out[-fade:] *= ramp[::-1]
    return out


def silence(pause_ms: int) -> np.ndarray:
    return np.zeros(round(pause_ms * SAMPLE_RATE / 1000), dtype=np.float32)


def placements(sizes: list[int], pauses_ms: list[int]) -> tuple[list[Placed], int]:
    """Where segments of ``sizes`` samples lie when each is followed by its pause (levelling keeps a size), and
    the whole chapter's length in samples."""
    placed: list[Placed] = []
    cursor = 0
    for size, pause_ms in zip(sizes, pauses_ms, strict=True):
        placed.append(Placed(cursor, cursor + size))
        cursor += size + silence(pause_ms).size
    return placed, cursor


def join(segments: list[np.ndarray], pauses_ms: list[int]) -> tuple[np.ndarray, list[Placed]]:
    """The chapter's samples, in memory, and where each segment lies in them; ``pauses_ms[i]`` of silence follow
    segment i. (A chapter is written segment by segment, `assembly`; this is the same sum at once.)"""
    pieces = [
        piece
        for samples, pause_ms in zip(segments, pauses_ms, strict=True)
        for piece in (levelled(samples), silence(pause_ms))
    ]
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    placed, length = placements([np.asarray(s).size for s in segments], pauses_ms)
    assert audio.size == length
    return audio, placed
