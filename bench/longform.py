"""Long-form speech: a 5,000-character chapter through ``POST /synthesis`` against the same segments sent one
``/infer`` request at a time, in one run.

A real `InferenceService` behind the real router (httpx over ASGI), the tiny Qwen3-TTS checkpoints, S3 on an
in-process moto server. The chapter is split by the server; its manifest gives the segments' texts, which the
baseline then sends one after another. Both are measured in seconds of speech (the segments' audio, pauses left out)
per wall second.

    .venv/bin/python -m bench.longform [--chars 5000] [--write-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
import platform
import shutil
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402
import soundfile as sf  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from bench.local_stack import local_stack  # noqa: E402
from bench.results import write_section  # noqa: E402

SECTION = "## Long-form chapters (`bench/longform.py`)"
VOICE = "bench"
SUBJECTS = ("The miller", "Dr. Hale", "A tired fox", "The ferryman", "Our neighbour", "The old clerk")
ACTIONS = ("walked past the river", "counted 3.5 barrels", "painted a red door", "carried two lanterns")


def chapter(chars: int) -> str:
    sentences: list[str] = []
    while sum(len(s) + 1 for s in sentences) < chars:
        n = len(sentences)
        sentences.append(
            f"{SUBJECTS[n % len(SUBJECTS)]} {ACTIONS[n % len(ACTIONS)]} on the morning of day {n + 1}."
        )
    return " ".join(sentences)[:chars].rsplit(".", 1)[0] + "."


async def run(chars: int) -> str:
    import torch
    from voicefinetune_inference import InferenceService, build_router

    from voicefinetune.opslog import OpsLog
    from voicefinetune.storage import Storage

    torch.manual_seed(0)
    with local_stack("longform") as (work, tiny, settings):
        settings = dataclasses.replace(settings, data_dir=work / "data")
        storage = Storage(settings)
        storage.ensure_bucket()
        service = InferenceService(settings, storage, OpsLog(settings.state_dir / "ops.jsonl"))
        await service.start()
        folder = settings.job_dir(VOICE) / "output" / "checkpoint-epoch-0"
        shutil.copytree(tiny.custom_voice, folder)
        await service.catalog.register(VOICE, "tiny_speaker", checkpoint_path=str(folder))
        app = FastAPI()
        app.include_router(build_router(service))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=600
        ) as client:
            await client.post(f"/infer/{VOICE}", json={"text": "Warm up.", "upload_to_s3": False})
            text = chapter(chars)

            started = time.perf_counter()
            answer = await client.post("/synthesis", json={"text": text, "voice": VOICE})
            answer.raise_for_status()
            synthesis_id = answer.json()["synthesis_id"]
            while (status := (await client.get(f"/synthesis/{synthesis_id}")).json())["status"] in (
                "queued",
                "running",
            ):
                await asyncio.sleep(0.05)
            chapter_wall = time.perf_counter() - started
            assert status["status"] == "succeeded", status
            manifest = json.loads(storage.read_bytes(status["output"]["manifest_s3_key"]) or b"{}")
            segments = manifest["segments"]
            chapter_speech = sum(s["end"] - s["start"] for s in segments)

            started = time.perf_counter()
            single_speech = 0.0
            for segment in segments:
                one = await client.post(
                    f"/infer/{VOICE}", json={"text": segment["text"], "upload_to_s3": False}
                )
                one.raise_for_status()
                info = sf.info(io.BytesIO(one.content))
                single_speech += info.frames / info.samplerate
            single_wall = time.perf_counter() - started
        await service.stop()
        return render(
            len(text),
            len(segments),
            (chapter_wall, chapter_speech, status["output"]["duration_s"]),
            (single_wall, single_speech),
            torch.get_num_threads(),
        )


def render(chars, segments, chapter, single, threads) -> str:
    chapter_wall, chapter_speech, duration = chapter
    single_wall, single_speech = single
    chapter_rate, single_rate = chapter_speech / chapter_wall, single_speech / single_wall
    return "\n".join(
        [
            "`python -m bench.longform --write-docs`: one `InferenceService` behind the real router (httpx over ASGI),",
            "tiny random checkpoints, S3 on moto. One chapter through `POST /synthesis` (split by the server, rendered",
            "concurrently, joined, written with its manifest and subtitles), then the same segments (the manifest's",
            "texts) sent one `/infer` request at a time. Rates count the segments' speech, pauses left out.",
            "",
            "| Path | Characters | Segments | Wall s | Speech s | Speech s per wall s |",
            "|---|---:|---:|---:|---:|---:|",
            f"| `POST /synthesis` (whole chapter, joined {duration:.1f} s file) | {chars} | {segments} | "
            f"{chapter_wall:.2f} | {chapter_speech:.1f} | {chapter_rate:.2f} |",
            f"| one `/infer` at a time | {chars} | {segments} | {single_wall:.2f} | {single_speech:.1f} | "
            f"{single_rate:.2f} |",
            "",
            f"`/synthesis` vs one by one: **{chapter_rate / single_rate:.1f}x** speech seconds per wall second.",
            "",
            f"- Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} CPU, {os.cpu_count()} cores, torch "
            f"{threads} thread(s), one run, tiny random model (its utterances stop at 24 frames, so each segment's "
            "length is set by the model, not the text). The ratio comes from request fusion: the chapter's segments "
            "share batched generate calls (VFT_INFERENCE_MAX_BATCH, 8 by default).",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.longform", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=int, default=5000, help="chapter length in characters (default 5000)")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)
    table = asyncio.run(run(args.chars))
    print(table)
    if args.write_docs:
        write_section(SECTION, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
