"""A chapter's file written segment by segment (`chapters.assembly`) is the file the in-memory join and a whole
encode make: byte for byte where the encoder is deterministic, sample for sample for Ogg Opus (whose stream serial
is random); segments come from S3 (moto) and their records' sample counts place them."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import soundfile as sf
from voicefinetune_inference.audio.wav import to_wav_bytes
from voicefinetune_inference.chapters.assembly import (
    AssemblyStopped,
    ChapterLayout,
    clear_scratch,
    publish_chapter,
    write_chapter,
)
from voicefinetune_inference.chapters.files import FORMATS, ChapterAudio, encode
from voicefinetune_inference.chapters.joining import join, placements
from voicefinetune_inference.chapters.segmenting import Segment
from voicefinetune_inference.chapters.store import ChapterStore

from voicefinetune.storage import Storage

MARKERS = [(0, 30_000, "1"), (30_000, 72_000, "2")]
SYNTHESIS = "assembled"


def speech(samples: int, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(samples)).astype(np.float32)


def decoded(data: bytes) -> np.ndarray:
    return sf.read(io.BytesIO(data), dtype="float32")[0]


def same_file(got: bytes, want: bytes, audio_format: str) -> None:
    if audio_format == "opus":
        np.testing.assert_array_equal(decoded(got), decoded(want))
    else:
        assert got == want


@pytest.mark.parametrize("audio_format", sorted(FORMATS))
def test_a_file_written_in_pieces_is_the_file_written_at_once(audio_format):
    samples = speech(72_000, seed=1)
    sink = io.BytesIO()
    with ChapterAudio(sink, audio_format, MARKERS) as audio:
        for start in range(0, samples.size, 7_001):  # pieces that fit no encoder's frame
            audio.write(samples[start : start + 7_001])
    same_file(sink.getvalue(), encode(samples, audio_format, MARKERS), audio_format)


def stored_segments(
    storage: Storage, sizes: list[int], pauses: list[int]
) -> tuple[ChapterStore, list[Segment]]:
    store = ChapterStore(storage)
    segments = []
    for index, (size, pause) in enumerate(zip(sizes, pauses, strict=True)):
        wav = to_wav_bytes(speech(size, seed=index))
        store.put_segment(SYNTHESIS, index, wav, {"index": index, "samples": size})
        segments.append(Segment(index, index // 2, f"line {index}", "v", "", "english", pause))
    return store, segments


@pytest.mark.parametrize("audio_format", sorted(FORMATS))
def test_a_chapter_from_s3_is_the_in_memory_join_encoded_whole(storage, tmp_path, audio_format):
    sizes, pauses = [24_000, 7_000, 31_000, 12_345, 40_000, 1_920], [250, 600, 250, 0, 250, 600]
    store, segments = stored_segments(storage, sizes, pauses)
    placed, length = placements(sizes, pauses)
    markers = [(p.start, p.end, str(n)) for n, p in enumerate(placed, 1)]
    path = tmp_path / f"chapter.{audio_format}"
    write_chapter(store, ChapterLayout(SYNTHESIS, segments, placed, audio_format, markers), path)

    in_s3 = [decoded(store.segment_audio(SYNTHESIS, index)) for index in range(len(sizes))]
    audio, joined = join(in_s3, pauses)
    assert joined == placed and audio.size == length
    same_file(path.read_bytes(), encode(audio, audio_format, markers), audio_format)


def test_a_segment_whose_audio_disagrees_with_its_record_is_refused(storage, tmp_path):
    store, segments = stored_segments(storage, [24_000, 7_000], [250, 250])
    placed, _ = placements([24_000, 7_001], [250, 250])
    with pytest.raises(ValueError, match="segment 1 of synthesis assembled has 7000 samples in S3 but 7001"):
        write_chapter(store, ChapterLayout(SYNTHESIS, segments, placed, "wav", []), tmp_path / "chapter.wav")


def test_a_stopped_assembly_uploads_nothing_and_leaves_no_folder(storage, tmp_path):
    store, segments = stored_segments(storage, [24_000, 7_000, 12_000], [250, 250, 0])
    placed, _ = placements([24_000, 7_000, 12_000], [250, 250, 0])
    layout = ChapterLayout(SYNTHESIS, segments, placed, "wav", [])
    stop = threading.Event()
    stop.set()
    with pytest.raises(AssemblyStopped):
        publish_chapter(store, layout, "audio/x/chapter.wav", tmp_path, stop)
    assert list(tmp_path.iterdir()) == [] and not storage.exists("audio/x/chapter.wav")

    publish_chapter(store, layout, "audio/x/chapter.wav", tmp_path, threading.Event())
    assert list(tmp_path.iterdir()) == [] and storage.head("audio/x/chapter.wav").size > 0


def test_folders_a_stopped_process_left_are_cleared(tmp_path):
    (tmp_path / "chapter-abc" / "inner").mkdir(parents=True)
    (tmp_path / "jobs").mkdir()
    clear_scratch(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["jobs"]
