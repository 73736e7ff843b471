"""A finished chapter's audio written segment by segment into a file: each segment is fetched from S3 a few ahead
of the writer, levelled, written with its pause and let go, so a chapter of hours is assembled in the memory of a
few segments. Where each segment lies comes from the sample counts in the segments' records, before any audio is
read (the M4B file's chapter marks are written first); each segment's audio is checked against its record."""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from voicefinetune_inference.chapters.files import FORMATS, ChapterAudio
from voicefinetune_inference.chapters.joining import Placed, levelled, silence
from voicefinetune_inference.chapters.segmenting import Segment
from voicefinetune_inference.chapters.store import ChapterStore

LOOKAHEAD = 4  # segments fetched ahead of the one being written
SCRATCH_PREFIX = "chapter-"  # the folder of a file being written, under VFT_DATA_DIR


def segment_samples(store: ChapterStore, synthesis_id: str, index: int) -> np.ndarray:
    samples, _rate = sf.read(io.BytesIO(store.segment_audio(synthesis_id, index)), dtype="float32")
    return samples.reshape(-1)


def _in_order(
    store: ChapterStore, synthesis_id: str, segments: list[Segment]
) -> Generator[np.ndarray, None, None]:
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


class AssemblyStopped(Exception):
    """The chapter's run was cancelled while its file was being written."""


@dataclass(frozen=True)
class ChapterLayout:
    """What a chapter's file is made of: its segments in order, where each lies (`joining.placements`), the
    format and the M4B chapter marks (start, end in samples, title)."""

    synthesis_id: str
    segments: list[Segment]
    placed: list[Placed]
    audio_format: str
    markers: list[tuple[int, int, str]]


def write_chapter(
    store: ChapterStore, layout: ChapterLayout, path: Path, stop: threading.Event | None = None
) -> None:
    """(blocking) The chapter's file at ``path``: every segment levelled at its place, its pause after it.
    AssemblyStopped as soon as ``stop`` is set (checked at each segment)."""
    synthesis_id = layout.synthesis_id
    with (
        contextlib.closing(_in_order(store, synthesis_id, layout.segments)) as fetched,
        open(path, "wb") as sink,
        ChapterAudio(sink, layout.audio_format, layout.markers) as audio,
    ):
        for seg, where, samples in zip(layout.segments, layout.placed, fetched, strict=True):
            if stop is not None and stop.is_set():
                raise AssemblyStopped(synthesis_id)
            if samples.size != where.end - where.start:
                raise ValueError(
                    f"segment {seg.index} of synthesis {synthesis_id} has {samples.size} samples in S3 but "
                    f"{where.end - where.start} in its record"
                )
            audio.write(levelled(samples))
            audio.write(silence(seg.pause_ms))


def publish_chapter(
    store: ChapterStore, layout: ChapterLayout, key: str, scratch: Path, stop: threading.Event
) -> None:
    """(blocking) `write_chapter` into a folder of its own under ``scratch``, uploaded to ``key`` (its format's
    content type) unless ``stop`` is set by then, and removed."""
    extension, content_type = FORMATS[layout.audio_format]
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=scratch) as folder:
        path = Path(folder) / f"{layout.synthesis_id}.{extension}"
        write_chapter(store, layout, path, stop)
        if stop.is_set():
            raise AssemblyStopped(layout.synthesis_id)
        store.put_output(key, path, content_type)


def clear_scratch(scratch: Path) -> None:
    """Folders a stopped process left behind (their chapters are written again when resumed)."""
    for folder in scratch.glob(f"{SCRATCH_PREFIX}*"):
        shutil.rmtree(folder, ignore_errors=True)
