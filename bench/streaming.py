"""Streamed speech: time to first audio vs time to the whole response, side by side in one run.

A real inference server (uvicorn on loopback) serves one fine-tuned voice; the official `openai` client streams
`POST /v1/audio/speech` (pcm) for 1, 5 and 20-sentence inputs, interleaved with the seed's buffered `/infer` on the
same text (its first byte is its last). Then K concurrent streams of 5 sentences. Tiny random checkpoints on CPU by
default; on a CUDA machine pass `--checkpoint DIR --speaker NAME` (a custom-voice checkpoint of the 1.7B
architecture) with DEVICE=cuda for first-audio ms and real-time factor (targets there: first audio <= 250 ms,
>= 3x real time for one stream).

    .venv/bin/python -m bench.streaming [--rounds 3] [--concurrent 4] [--write-docs]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402
import openai  # noqa: E402

from bench.results import DOCS, write_section  # noqa: E402

SECTION = "## Streaming: first audio vs whole response (`bench/streaming.py`)"
VOICE = "bench"
SIZES = (1, 5, 20)
SAMPLE_RATE = 24000


def sentences(count: int, offset: int = 0) -> str:
    return " ".join(f"Here is sentence {offset + n} of the benchmark text." for n in range(1, count + 1))


def start_server(settings) -> tuple[str, object, threading.Thread]:
    import uvicorn
    from voicefinetune_inference.app import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the inference server did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def streamed(
    client: openai.OpenAI, text: str, voice: str = VOICE, extra_body: dict | None = None
) -> tuple[float, float, float]:
    """(seconds to the first audio bytes, seconds to the last, seconds of audio) of one streamed pcm request;
    ``extra_body``: the server's extension fields (e.g. a clone voice's reference)."""
    started = time.perf_counter()
    first = None
    size = 0
    with client.audio.speech.with_streaming_response.create(
        model="qwen3-tts", voice=voice, input=text, response_format="pcm", extra_body=extra_body
    ) as response:
        for chunk in response.iter_bytes():
            if first is None and chunk:
                first = time.perf_counter() - started
            size += len(chunk)
    return first or 0.0, time.perf_counter() - started, size / 2 / SAMPLE_RATE


def buffered(url: str, text: str) -> tuple[float, float]:
    """(seconds to the whole WAV, seconds of audio) of the seed's /infer: one utterance for the whole text."""
    import io

    import soundfile as sf

    started = time.perf_counter()
    answer = httpx.post(f"{url}/infer/{VOICE}", json={"text": text, "upload_to_s3": False}, timeout=600)
    answer.raise_for_status()
    return time.perf_counter() - started, sf.info(io.BytesIO(answer.content)).duration


def run(settings, checkpoint: Path, speaker: str, rounds: int, concurrent: int) -> str:
    folder = settings.job_dir(VOICE) / "output" / "checkpoint-epoch-0"
    shutil.copytree(checkpoint, folder)
    url, server, thread = start_server(settings)
    try:
        answer = httpx.post(
            f"{url}/voices/{VOICE}", json={"speaker_name": speaker, "preload": True}, timeout=600
        )
        answer.raise_for_status()
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)
        streamed(client, "Warm up.")
        rows = []
        for size in SIZES:
            firsts, totals, audio, whole = [], [], [], []
            for round_ in range(rounds):
                text = sentences(size, offset=round_ * 100)
                first, total, seconds = streamed(client, text)
                firsts.append(first)
                totals.append(total)
                audio.append(seconds)
                whole.append(buffered(url, text))
            rows.append((size, firsts, totals, audio, whole))
        with ThreadPoolExecutor(concurrent) as pool:
            started = time.perf_counter()
            results = list(
                pool.map(lambda i: streamed(client, sentences(5, offset=1000 + i * 10)), range(concurrent))
            )
            wall = time.perf_counter() - started
    finally:
        server.should_exit = True
        thread.join(30)
    return render(rows, results, wall, rounds, concurrent, "continuous" if settings.continuous else "batch")


def render(rows, results, wall: float, rounds: int, concurrent: int, scheduler: str) -> str:
    import torch

    med = statistics.median
    lines = [
        "`python -m bench.streaming --write-docs`: a real inference server (uvicorn on loopback) with one tiny "
        "fine-tuned voice; the official `openai` client streams `/v1/audio/speech` (pcm), each round interleaved with "
        "the seed's buffered `/infer` on the same text; then concurrent streams.",
        "",
        "| input | streamed: first audio (ms) | streamed: whole (ms) | first / whole | streamed audio (s) "
        "| streamed real-time factor | buffered `/infer`: first = whole (ms) | `/infer` audio (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, firsts, totals, audio, whole in rows:
        lines.append(
            f"| {size} sentence{'s' if size > 1 else ''} | {med(firsts) * 1000:.0f} | {med(totals) * 1000:.0f} "
            f"| {med(f / t for f, t in zip(firsts, totals, strict=True)):.2f} | {med(audio):.2f} "
            f"| {med(a / t for a, t in zip(audio, totals, strict=True)):.2f}x | {med(w[0] for w in whole) * 1000:.0f} "
            f"| {med(w[1] for w in whole):.2f} |"
        )
    firsts = [r[0] for r in results]
    audio = sum(r[2] for r in results)
    lines += [
        "",
        f"{concurrent} concurrent streams of 5 sentences: first audio median {med(firsts) * 1000:.0f} ms, "
        f"max {max(firsts) * 1000:.0f} ms; all done in {wall * 1000:.0f} ms; {audio:.2f} s of audio "
        f"({audio / wall:.2f}x real time together).",
        "",
        f"- Medians of {rounds} rounds, streamed and buffered requests interleaved, {platform.machine()} with "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} torch threads, Python "
        f"{platform.python_version()}. No GPU was available: the CUDA row (1.7B architecture, targets first audio "
        "<= 250 ms and >= 3x real time) was not measured.",
        "- The tiny checkpoints stop at 24 codec frames (about 2 s) per utterance: `/infer` says the whole text as one "
        "utterance, so its audio stays short however long the input, while the stream says each sentence; compare "
        "first / whole, not the two totals. The real-time factor of tiny random models says little about real "
        "voices; the buffered endpoint's first byte is its last.",
        f"- Scheduler `{scheduler}`: "
        + (
            "concurrent streams share their model's decode loop frame by frame, each stream's current sentence "
            "before other streams' look-ahead ones (`bench/concurrency.py` compares the schedulers)."
            if scheduler == "continuous"
            else "concurrent streams of one voice take turns on its model utterance by utterance, so a stream's "
            "first audio can wait for other streams' sentences."
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--checkpoint", type=Path, help="a custom-voice checkpoint (default: the tiny one)")
    parser.add_argument("--speaker", default="tiny_speaker")
    parser.add_argument("--write-docs", action="store_true", help=f"write the table into {DOCS}")
    args = parser.parse_args(argv)

    from voicefinetune.devtools.tiny_models import ensure_tiny_models
    from voicefinetune.settings import Settings

    with tempfile.TemporaryDirectory(prefix="vft-bench-stream-") as tmp:
        root = Path(tmp)
        tiny = ensure_tiny_models(root / "tiny")
        environ = {
            "DEVICE": os.environ.get("DEVICE", "cpu"),
            "USE_FLASH_ATTN": "0",
            "VFT_DATA_DIR": str(root / "data"),
            "VFT_TINY_MODELS": "1",
            "VFT_TINY_MODELS_DIR": str(tiny.root),
        }
        settings = replace(Settings.from_env(environ), s3_access_key=None, s3_secret_key=None)
        table = run(
            settings, args.checkpoint or tiny.custom_voice, args.speaker, args.rounds, args.concurrent
        )
    print(table)
    if args.write_docs:
        write_section(SECTION, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
