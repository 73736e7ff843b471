"""Pitch-preserving speed change (OpenAI's ``speed``, 0.25-4.0) as a stream: FFmpeg's ``atempo`` filter through
PyAV, fed chunk by chunk so a streamed response keeps streaming."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from voicefinetune.schemas import SAMPLE_RATE

MIN_SPEED = 0.25
MAX_SPEED = 4.0


def tempo_steps(speed: float) -> list[float]:
    """``speed`` as a product of factors in [0.5, 2.0], the range where ``atempo`` keeps its best quality."""
    steps: list[float] = []
    rest = float(speed)
    while rest > 2.0:
        steps.append(2.0)
        rest /= 2.0
    while rest < 0.5:
        steps.append(0.5)
        rest /= 0.5
    steps.append(rest)
    return steps


class TimeStretch:
    """``push(samples)`` returns what the filter has ready; ``flush()`` the rest at the end of the stream."""

    def __init__(self, speed: float, sample_rate: int = SAMPLE_RATE):
        import av.filter

        self.speed = float(speed)
        self._rate = sample_rate
        self._pts = 0
        self._graph = av.filter.Graph()
        node = self._graph.add_abuffer(
            format="flt", sample_rate=sample_rate, layout="mono", time_base=Fraction(1, sample_rate)
        )
        self._source = node
        for factor in tempo_steps(speed):
            step = self._graph.add("atempo", f"{factor:.6f}")
            node.link_to(step)
            node = step
        sink = self._graph.add("abuffersink")
        node.link_to(sink)
        self._graph.configure()

    def push(self, samples: np.ndarray) -> np.ndarray:
        import av

        mono = np.asarray(samples, dtype=np.float32).reshape(1, -1)
        if mono.shape[1] == 0:
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(mono, format="flt", layout="mono")
        frame.sample_rate = self._rate
        frame.pts = self._pts
        self._pts += mono.shape[1]
        self._graph.push(frame)
        return self._pull()

    def flush(self) -> np.ndarray:
        self._graph.push(None)
        return self._pull()

    def _pull(self) -> np.ndarray:
        import av

        out = []
        while True:
            try:
                frame = self._graph.pull()
            except (av.BlockingIOError, av.EOFError):
                break
            out.append(frame.to_ndarray().reshape(-1).astype(np.float32))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
