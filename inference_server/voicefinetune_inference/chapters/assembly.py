"""A finished chapter's audio written segment by segment into a file: each segment is fetched from S3 a few ahead
of the writer, levelled, written with its pause and let go, so a chapter of hours is assembled in the memory of a
few segments. Where each segment lies comes from the sample counts in the segments' records, before any audio is
read (the M4B file's chapter marks are written first); each segment's audio is checked against its record."""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from voicefinetune_inference.chapters.files import ChapterAudio
from voicefinetune_inference.chapters.joining import Placed, levelled, silence
from voicefinetune_inference.chapters.segmenting import Segment
from voicefinetune_inference.chapters.store import ChapterStore

LOOKAHEAD = 4  # segments fetched ahead of the one being written


def segment_samples(store: ChapterStore, synthesis_id: str, index: int) -> np.ndarray:
    samples, _rate = sf.read(io.BytesIO(store.segment_audio(synthesis_id, index)), dtype="float32")
    return samples.reshape(-1)


def _in_order(store: ChapterStore, synthesis_id: str, segments: list[Segment]) -> Iterator[np.ndarray]:
    """Each segment's samples in order, at most ``LOOKAHEAD`` fetched ahead of the caller."""
    with ThreadPoolExecutor(LOOKAHEAD, thread_name_prefix="vft-chapter-fetch") as pool:
        ahead: deque[Future[np.ndarray]] = deque()
        upcoming = iter(segments)
        try:
            while True:
                while len(ahead) < LOOKAHEAD and (seg := next(upcoming, None)) is not None:
                    ahead.append(pool.submit(segment_samples, store, synthesis_id, seg.index))
                if not ahead:
                    return
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()


def write_chapter(
    store: ChapterStore,
    synthesis_id: str,
    segments: list[Segment],
    placed: list[Placed],
    audio_format: str,
    markers: list[tuple[int, int, str]],
    path: Path,
) -> None:
    """(blocking) The chapter's file at ``path``: every segment levelled at its place, its pause after it."""
    fetched = _in_order(store, synthesis_id, segments)
    with open(path, "wb") as sink, ChapterAudio(sink, audio_format, markers) as audio:
        for seg, where, samples in zip(segments, placed, fetched, strict=True):
            if samples.size != where.end - where.start:
                raise ValueError(
                    f"segment {seg.index} of synthesis {synthesis_id} has {samples.size} samples in S3 but "
                    f"{where.end - where.start} in its record"
                )
            audio.write(levelled(samples))
            audio.write(silence(seg.pause_ms))
