"""The quality guard: a segment that ran to its frame bound (the model emitted no end of speech) or whose length per
character is far from its voice's norm in this chapter is generated again."""

from __future__ import annotations

import statistics
from collections import defaultdict

SAMPLES_PER_FRAME = 1920  # one 80 ms codec frame at 24 kHz
MAX_ATTEMPTS = 3  # the first and two more
NORM_AFTER = 4  # segments of a voice before its norm is trusted
FAR_OFF = 3.0  # a ratio to the norm beyond this (either way) is refused


def frame_bound_samples(text: str) -> int:
    from voicefinetune_inference.engine.fast_engine import frame_bound  # torch: with the first chapter

    return frame_bound(text) * SAMPLES_PER_FRAME


class DurationNorms:
    """Seconds per character of each voice's accepted segments."""

    def __init__(self) -> None:
        self._rates: dict[str, list[float]] = defaultdict(list)

    def add(self, voice: str, text: str, samples: int, sample_rate: int) -> None:
        self._rates[voice].append(samples / sample_rate / max(1, len(text)))

    def problem(self, voice: str, text: str, samples: int, sample_rate: int) -> str | None:
        """Why this rendering is refused, or None."""
        if samples >= frame_bound_samples(text) - SAMPLES_PER_FRAME:
            return "reached its frame bound (no end of speech)"
        rates = self._rates[voice]
        if len(rates) < NORM_AFTER:
            return None
        norm = statistics.median(rates)
        rate = samples / sample_rate / max(1, len(text))
        if norm > 0 and not (1 / FAR_OFF <= rate / norm <= FAR_OFF):
            return f"{rate / norm:.1f}x its voice's seconds per character"
        return None
