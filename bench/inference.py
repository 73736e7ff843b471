"""Inference throughput with request fusion vs the same items one by one, and cold vs warm latency, in one run.

Everything goes through the real HTTP router (httpx over ASGI) of real `InferenceService`s on the tiny
Qwen3-TTS checkpoints, with S3 on an in-process moto server for the S3 restore row:

- throughput: N distinct sentences for one voice sent (a) one request after another, (b) all at once to a service
  whose fusion is off (batch cap 1), (c) all at once with fusion on (the defaults); rounds interleave the three;
- latency of one request: warm (model in memory), cold from disk (after POST /gpu/unload) and cold from S3 (the
  disk LRU deleted the folder first), interleaved too.

    .venv/bin/python -m bench.inference [--items 16] [--rounds 3] [--write-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import platform
import shutil
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402
import soundfile as sf  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from bench.local_stack import local_stack
from bench.results import DOCS, load_average, write_section

SECTION = "## Inference: fusion and cold vs warm (`bench/inference.py`)"
VOICE = "bench"


@dataclasses.dataclass
class Bench:
    service: object
    client: httpx.AsyncClient


async def open_bench(settings, tiny_models, storage_cls, opslog_cls) -> Bench:
    from voicefinetune_inference import InferenceService, build_router

    from voicefinetune.storage import checkpoint_prefix

    storage = storage_cls(settings)
    storage.ensure_bucket()
    service = InferenceService(settings, storage, opslog_cls(settings.state_dir / "ops.jsonl"))
    await service.start()
    folder = settings.job_dir(VOICE) / "output" / "checkpoint-epoch-0"
    shutil.copytree(tiny_models.custom_voice, folder)
    prefix = (
        f"{checkpoint_prefix(VOICE)}/{settings.data_dir.name}"  # one copy per service, under its own prefix
    )
    storage.upload_dir(folder, prefix)
    await service.catalog.register(VOICE, "tiny_speaker", checkpoint_path=str(folder), s3_prefix=prefix)
    app = FastAPI()
    app.include_router(build_router(service))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=600)
    return Bench(service, client)


async def say(bench: Bench, text: str) -> float:
    """One /infer request; returns the seconds of audio it produced."""
    answer = await bench.client.post(f"/infer/{VOICE}", json={"text": text, "upload_to_s3": False})
    answer.raise_for_status()
    info = sf.info(io.BytesIO(answer.content))
    return info.frames / info.samplerate


async def one_by_one(bench: Bench, texts: list[str]) -> tuple[float, float]:
    started = time.perf_counter()
    audio = 0.0
    for text in texts:
        audio += await say(bench, text)
    return time.perf_counter() - started, audio


async def all_at_once(bench: Bench, texts: list[str]) -> tuple[float, float]:
    started = time.perf_counter()
    audio = sum(await asyncio.gather(*(say(bench, text) for text in texts)))
    return time.perf_counter() - started, audio


async def timed(coroutine) -> float:
    started = time.perf_counter()
    await coroutine
    return time.perf_counter() - started


async def run(items: int, rounds: int) -> str:
    import torch

    from voicefinetune.opslog import OpsLog
    from voicefinetune.storage import Storage

    torch.manual_seed(0)
    with local_stack("inference") as (work, tiny, base):
        fused = await open_bench(dataclasses.replace(base, data_dir=work / "fused"), tiny, Storage, OpsLog)
        unfused = await open_bench(
            dataclasses.replace(base, data_dir=work / "unfused", inference_max_batch=1), tiny, Storage, OpsLog
        )
        texts = [
            f"Line {i}: the hero walked on through the quiet night, counting stars." for i in range(items)
        ]
        for bench in (fused, unfused):  # load the model, warm librosa and the tokenizer
            await say(bench, "Warm up.")

        throughput: dict[str, list[tuple[float, float]]] = {"sequential": [], "unfused": [], "fused": []}
        calls: dict[str, list[int]] = {"sequential": [], "unfused": [], "fused": []}
        for _ in range(rounds):
            for name, bench, method in (
                ("sequential", fused, one_by_one),
                ("unfused", unfused, all_at_once),
                ("fused", fused, all_at_once),
            ):
                before = bench.service.batcher.calls
                throughput[name].append(await method(bench, texts))
                calls[name].append(bench.service.batcher.calls - before)

        latency: dict[str, list[float]] = {"warm": [], "disk": [], "s3": []}
        service = fused.service
        for _ in range(rounds + 2):
            latency["warm"].append(await timed(say(fused, "A short warm line.")))
            await fused.client.post("/gpu/unload")
            latency["disk"].append(await timed(say(fused, "A short cold line.")))
            await fused.client.post("/gpu/unload")
            report = await service.disk_keeper.prune_disk(threshold_gb=0)
            assert [d["job_id"] for d in report["deleted"]] == [VOICE], report
            latency["s3"].append(await timed(say(fused, "A short line from S3.")))

        loads = service.opslog.history(op_name="model_load")
        for bench in (fused, unfused):
            await bench.client.aclose()
            await bench.service.stop()
        return render(items, rounds, throughput, calls, latency, len(loads), torch.get_num_threads())


def render(items, rounds, throughput, calls, latency, loads, threads) -> str:
    labels = {
        "sequential": "one by one (each request waits for the previous)",
        "unfused": "all at once, fusion off (batch cap 1)",
        "fused": "all at once, fusion on (cap 8, 15 ms window)",
    }
    rows = [
        "`python -m bench.inference --write-docs`: real `InferenceService`s behind the real router (httpx over",
        "ASGI), tiny random checkpoints, S3 on moto. Throughput: the same N sentences for one voice sent one request",
        "after another, all at once to a service with fusion off, and all at once with fusion on (the defaults);",
        "rounds interleave the three. Latency: one request warm, cold from disk (after `POST /gpu/unload`) and cold",
        "from S3 (after the disk LRU deleted the folder), interleaved too.",
        "",
        "| Mode | Items | Wall s (median) | Items/s | Audio s per wall s | Generate calls |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    medians = {}
    for name, samples in throughput.items():
        wall = statistics.median(w for w, _ in samples)
        audio = statistics.median(a / w for w, a in samples)
        medians[name] = items / wall
        rows.append(
            f"| {labels[name]} | {items} | {wall:.2f} | {items / wall:.2f} | {audio:.2f} | "
            f"{statistics.median(calls[name]):.0f} |"
        )
    rows += [
        "",
        f"Fusion vs one by one: **{medians['fused'] / medians['sequential']:.1f}x** items/s; fusion vs concurrent "
        f"without fusion: **{medians['fused'] / medians['unfused']:.1f}x**.",
        "",
        "| One request | Median ms | Min ms | Max ms | Runs |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (
        ("warm", "warm: model in memory"),
        ("disk", "cold: disk → memory (after /gpu/unload)"),
        ("s3", "cold: S3 → disk → memory (after the disk LRU deleted it)"),
    ):
        values = [v * 1000 for v in latency[name]]
        rows.append(
            f"| {label} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} | {len(values)} |"
        )
    load = load_average()
    rows += [
        "",
        f"- Tiny checkpoints (24 codec frames at most per utterance) on CPU: {os.cpu_count()} cores, torch threads "
        f"{threads}, Python {platform.python_version()},",
        f"  load average {load:.1f} at the end; {rounds} interleaved rounds, {loads} model loads; measured "
        f"{time.strftime('%Y-%m-%d')} (`--items {items} --rounds {rounds}`).",
        "- Fusion wins because a batched generate call pays the per-step cost of the autoregressive loop once for",
        "  every item in it; without fusion, concurrent requests for one voice only queue behind each other.",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=16, help="sentences per throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--write-docs", action="store_true", help=f"replace the section of {DOCS.name}")
    args = parser.parse_args(argv)
    table = asyncio.run(run(args.items, args.rounds))
    print(table)
    if args.write_docs:
        write_section(SECTION, table)
        print(f"\nwritten to {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
