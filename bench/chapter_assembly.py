"""Memory and time to assemble a long chapter from its segments in S3: written segment by segment
(`chapters.assembly.write_chapter`, what the server does) against the in-memory path it replaced (every segment
fetched at once, joined into one array, encoded whole), side by side in one run, on the same segments.

S3 is an in-process moto server over HTTP; the segments are synthetic 16-bit WAVs of 3-5 s (no model is needed to
assemble). Peak memory is Python's traced allocations (``tracemalloc``, numpy's buffers included) during each
path, measured in a run of its own; wall time in an untraced run.

    .venv/bin/python -m bench.chapter_assembly [--minutes 30] [--write-docs]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.local_stack import moto_server
from bench.results import load_average, write_section

SECTION = "## Assembling long chapters (`bench/chapter_assembly.py`)"
SYNTHESIS = "bench-chapter"
PAUSE_MS = 250
FORMATS = ("wav", "mp3")


def make_segments(store, minutes: float) -> tuple[list, list[int]]:
    from voicefinetune_inference.audio.wav import to_wav_bytes
    from voicefinetune_inference.chapters.segmenting import Segment

    rng = np.random.default_rng(0)
    sizes: list[int] = []
    while sum(sizes) < minutes * 60 * 24_000:
        sizes.append(int(rng.integers(3 * 24_000, 5 * 24_000)))

    def put(index: int) -> None:
        noise = 0.1 * np.random.default_rng(index).standard_normal(sizes[index])
        store.put_segment(SYNTHESIS, index, to_wav_bytes(noise.astype(np.float32)), {"samples": sizes[index]})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(len(sizes))))
    segments = [Segment(i, 0, f"line {i}", "v", "", "english", PAUSE_MS) for i in range(len(sizes))]
    return segments, sizes


def in_memory(store, segments, sizes, audio_format: str, path: Path) -> None:
    """The path before: every segment fetched at once (asyncio.to_thread's pool size), joined, encoded whole."""
    from voicefinetune_inference.chapters.files import encode
    from voicefinetune_inference.chapters.joining import join

    def fetch(index: int) -> np.ndarray:
        return sf.read(io.BytesIO(store.segment_audio(SYNTHESIS, index)), dtype="float32")[0]

    with ThreadPoolExecutor(min(32, (os.cpu_count() or 1) + 4)) as pool:
        fetched = list(pool.map(fetch, [s.index for s in segments]))
    audio, _ = join(fetched, [s.pause_ms for s in segments])
    path.write_bytes(encode(audio, audio_format, []))


def streamed(store, segments, sizes, audio_format: str, path: Path) -> None:
    from voicefinetune_inference.chapters.assembly import ChapterLayout, write_chapter
    from voicefinetune_inference.chapters.joining import placements

    placed, _ = placements(sizes, [s.pause_ms for s in segments])
    write_chapter(store, ChapterLayout(SYNTHESIS, segments, placed, audio_format, []), path)


def measure(path_fn: Callable, store, segments, sizes, audio_format: str, scratch: Path) -> dict:
    out = scratch / f"{path_fn.__name__}.{audio_format}"
    started = time.perf_counter()
    path_fn(store, segments, sizes, audio_format, out)
    wall = time.perf_counter() - started
    tracemalloc.start()
    path_fn(store, segments, sizes, audio_format, out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"wall": wall, "peak": peak, "bytes": out.stat().st_size, "file": out.read_bytes()}


def run(minutes: float) -> str:
    from voicefinetune_inference.chapters.store import ChapterStore

    from voicefinetune.settings import Settings
    from voicefinetune.storage import Storage

    rows = []
    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="vft-bench-chapter-") as scratch:
        settings = Settings(
            s3_access_key="bench", s3_secret_key="bench", s3_bucket="bench", s3_endpoint_url=endpoint
        )
        storage = Storage(settings)
        storage.ensure_bucket()
        store = ChapterStore(storage)
        segments, sizes = make_segments(store, minutes)
        audio_seconds = (sum(sizes) + len(sizes) * PAUSE_MS * 24) / 24_000
        for audio_format in FORMATS:
            before = measure(in_memory, store, segments, sizes, audio_format, Path(scratch))
            after = measure(streamed, store, segments, sizes, audio_format, Path(scratch))
            same = before.pop("file") == after.pop("file")
            rows.append((audio_format, before, after, same))
    return render(len(segments), audio_seconds, rows)


def render(count: int, audio_seconds: float, rows: list) -> str:
    mb = 1024 * 1024
    lines = [
        "`python -m bench.chapter_assembly --write-docs`: one chapter's segments (synthetic 3-5 s WAVs, "
        f"{count} segments, {audio_seconds / 60:.1f} min with the pauses) in S3 on moto, assembled into its file "
        "by the server's path (segment by segment, 4 fetched ahead) and by the path it replaced (all fetched, joined "
        "in memory, encoded whole), side by side in one run. Peak: Python's traced allocations (numpy included) "
        "during a run of its own; wall: an untraced run.",
        "",
        "| format | path | wall s | peak traced MiB | file MiB | same file |",
        "|---|---|---:|---:|---:|---|",
    ]
    for audio_format, before, after, same in rows:
        for name, figures in (("in memory (before)", before), ("segment by segment", after)):
            lines.append(
                f"| {audio_format} | {name} | {figures['wall']:.2f} | {figures['peak'] / mb:,.1f} | "
                f"{figures['bytes'] / mb:,.1f} | {'yes' if same else 'no'} |"
            )
    ratios = "; ".join(
        f"{fmt}: peak **{before['peak'] / after['peak']:.0f}x** smaller, wall time {after['wall'] / before['wall']:.2f}x"
        for fmt, before, after, _ in rows
    )
    lines += [
        "",
        f"Segment by segment against in memory: {ratios}.",
        "",
        f"- Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} CPU, {os.cpu_count()} cores, one run, "
        f"load average {load_average():.1f}. The in-memory peak grows with the chapter (its samples are held "
        "twice: fetched, then joined, plus the encoded file); the streamed one is a few segments and the "
        "encoder's buffers whatever the length.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chapter_assembly", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="chapter length in minutes of speech")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)
    text = run(args.minutes)
    print(text)
    if args.write_docs:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
