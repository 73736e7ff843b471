"""Concurrent streams on one model: the continuous decode loop vs the batcher's fused calls (``VFT_SCHEDULER``).

A real inference server (uvicorn on loopback) per scheduler; the official `openai` client streams
`POST /v1/audio/speech` (pcm) with the server's `clone` voice extension: first a lone stream (the first-audio
reference), then N concurrent streams of 5 sentences each over 4 clone voices of the one Base model (each stream names
one of 4 generated reference WAVs, served on loopback from an origin in VFT_TRUSTED_URL_ORIGINS). Tiny random
checkpoints on CPU by default.

    .venv/bin/python -m bench.concurrency [--streams 16] [--write-docs]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import openai  # noqa: E402

from bench.results import DOCS, write_section  # noqa: E402
from bench.streaming import start_server, streamed  # noqa: E402

SECTION = "## Concurrent streams: continuous loop vs fused calls (`bench/concurrency.py`)"
# (label, VFT_SCHEDULER, VFT_ENGINE_SLOTS or None for the default: 8 on CPU); the third gives every stream a slot
CONFIGS = (
    ("batch", "batch", None),
    ("continuous", "continuous", None),
    ("continuous, a slot per stream", "continuous", 0),
)
REFERENCES = 4  # clone voices: one generated reference recording each
SENTENCES = 5


def text_for(stream: int) -> str:
    return " ".join(f"Stream {stream} says line {n}." for n in range(1, SENTENCES + 1))


@contextmanager
def served_references() -> Iterator[tuple[str, list[dict]]]:
    """(origin, the clone voices' extra body fields): generated reference WAVs, served on loopback."""
    from voicefinetune.devtools.sample_data import REF_TEXT, reference_clip

    wavs = {f"/ref-{n}.wav": reference_clip(seed=n, use_espeak=False).wav_bytes() for n in range(REFERENCES)}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = wavs.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield origin, [{"ref_audio_url": f"{origin}{path}", "ref_text": REF_TEXT} for path in wavs]
    finally:
        server.shutdown()
        thread.join(10)


def first_audio(client: openai.OpenAI, voice: dict, text: str) -> tuple[float, float]:
    """(seconds to the first audio bytes, seconds of audio) of one streamed clone-voice request."""
    first, _, audio = streamed(client, text, voice="clone", extra_body=voice)
    return first, audio


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(settings, voices: list[dict], streams: int) -> dict:
    url, server, thread = start_server(settings)
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=900)
        first_audio(client, voices[0], "Warm up.")
        lone = [first_audio(client, voices[0], text_for(100 + n))[0] for n in range(3)]
        with ThreadPoolExecutor(streams) as pool:
            started = time.perf_counter()
            results = list(
                pool.map(lambda i: first_audio(client, voices[i % len(voices)], text_for(i)), range(streams))
            )
            wall = time.perf_counter() - started
    finally:
        server.should_exit = True
        thread.join(30)
    firsts = [first for first, _ in results]
    return {
        "lone_first": statistics.median(lone),
        "audio_per_second": sum(audio for _, audio in results) / wall,
        "p50": percentile(firsts, 0.5),
        "p95": percentile(firsts, 0.95),
        "wall": wall,
    }


def render(figures: dict, streams: int, load: tuple[float, float]) -> str:
    import torch

    lines = [
        f"{streams} concurrent `/v1/audio/speech` streams (pcm) of {SENTENCES} sentences each over {REFERENCES} "
        "clone voices of one Base model (voice `clone` with a generated reference WAV served on loopback: the "
        "server's extension fields, see docs/openai.md), through the REST API of one inference server per scheduler. "
        f"**CPU figures** (tiny random checkpoints, {platform.machine()}, torch {torch.__version__}, "
        f"{os.cpu_count()} cores shared with other work: load average {load[0]:.1f} before, {load[1]:.1f} after); "
        "not measured on a GPU.",
        "",
        "| scheduler | audio s per wall s | first audio p50 | first audio p95 | lone stream's first audio | wall |",
        "|---|---|---|---|---|---|",
    ]
    for label, _, _ in CONFIGS:
        f = figures[label]
        lines.append(
            f"| {label} (`{f['slots']}` slots) | {f['audio_per_second']:.2f} | {f['p50'] * 1000:.0f} ms "
            f"| {f['p95'] * 1000:.0f} ms | {f['lone_first'] * 1000:.0f} ms | {f['wall']:.1f} s |"
        )
    lines.append("")
    for label, _, _ in CONFIGS[1:]:
        ratio = figures[label]["audio_per_second"] / max(figures["batch"]["audio_per_second"], 1e-9)
        p95_ratio = figures[label]["p95"] / max(figures[label]["lone_first"], 1e-9)
        lines.append(
            f"- {label}: {ratio:.2f}× batch's aggregate audio-s/s (target ≥ 2×); p95 first audio "
            f"{p95_ratio:.1f}× a lone stream's (target ≤ 3×)."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--write-docs", action="store_true", help=f"write the table into {DOCS}")
    args = parser.parse_args(argv)

    from voicefinetune.devtools.tiny_models import ensure_tiny_models
    from voicefinetune.settings import Settings

    figures = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vft-bench-concurrency-") as tmp, served_references() as served:
        origin, voices = served
        root = Path(tmp)
        tiny = ensure_tiny_models(root / "tiny")
        for label, scheduler, slots in CONFIGS:
            environ = {
                "DEVICE": os.environ.get("DEVICE", "cpu"),
                "USE_FLASH_ATTN": "0",
                "VFT_DATA_DIR": str(root / f"data-{len(figures)}"),
                "VFT_TINY_MODELS": "1",
                "VFT_TINY_MODELS_DIR": str(tiny.root),
                "VFT_SCHEDULER": scheduler,
                "VFT_TRUSTED_URL_ORIGINS": origin,
            }
            settings = replace(
                Settings.from_env(environ),
                s3_access_key=None,
                s3_secret_key=None,
                engine_slots=None if slots is None else args.streams,
            )
            figures[label] = run(settings, voices, args.streams)
            figures[label]["slots"] = (
                "—" if scheduler == "batch" else settings.engine_slots_for(settings.device.startswith("cuda"))
            )
    table = render(figures, args.streams, (load_before, os.getloadavg()[0]))
    print(f"{SECTION}\n\n{table}")
    if args.write_docs:
        write_section(SECTION, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
