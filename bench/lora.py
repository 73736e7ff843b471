"""LoRA voices next to full voices, side by side in one run (tiny models, CPU):

- bytes per voice on disk and in S3 (a full tiny voice vs rank-2 and rank-16 LoRA voices), and the 1.7B figures
  by arithmetic (the adapter's parameter count on the meta device, fp32 as PEFT saves it);
- the latency of a voice switch with ``GPU_MAX_MODELS=1`` (full: a reload; LoRA: none): the median time of the
  first request after a change minus that of a second request in the same voice;
- 4 voices × 4 concurrent requests through the REST API (httpx over ASGI, the real router and service) with
  ``GPU_MAX_MODELS=1``: audio seconds per second and CPU seconds, full vs LoRA, at ``VFT_ENGINE_SLOTS=16`` (the GPU
  default: all 16 in one continuous batch) and LoRA again at the CPU default of 8 slots;
- trainable parameters and train step time, full (compact recipe) vs LoRA rank 16 (tiny, CPU), and the 1.7B
  trainable parameters and peak-memory estimates: the fit check's formula, and the LoRA step's on fake tensors
  (`bench.train_memory.fake_peak`; ``--skip-fake`` leaves it out).

    .venv/bin/python -m bench.lora [--write-docs] [--skip-fake]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import soundfile as sf
from fastapi import FastAPI

from bench.local_stack import local_stack
from bench.results import DOCS, write_section

SECTION = "## LoRA voices vs full voices (`bench/lora.py`)"
VOICES = 4
REQUESTS_PER_VOICE = 4
SWITCHES = 6
SLOTS = 16  # VFT_ENGINE_SLOTS of the mixed workload: the GPU default, so that its 16 requests share one batch
CPU_SLOTS = 8  # the CPU default
LINE = "A short line."
SPEAKERS = ("Narrator", "Hero", "Villain", "Sidekick")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def train_voices(base: Path, root: Path, rank: int, count: int) -> tuple[list[Path], float, int]:
    """``count`` LoRA voices on the tiny base; (their folders, seconds per optimizer step, trainable parameters)."""
    import torch
    from voicefinetune_trainer.codes import encode_samples
    from voicefinetune_trainer.lora import LoraSettings
    from voicefinetune_trainer.sft import TrainConfig, load_base_model, train

    from voicefinetune.settings import Settings

    settings = Settings(device="cpu", use_flash_attn=False, data_dir=root / "data")
    folders, step_seconds, trainable = [], [], 0
    for seed in range(count):
        tts = load_base_model(base, settings, "lora")
        samples = encode_samples(tts, _items(seed))
        steps: list[float] = []
        config = TrainConfig(
            speaker_name=SPEAKERS[seed],
            num_epochs=2,
            batch_size=2,
            lr=2e-2,
            output_dir=root / f"r{rank}-{seed}",
            seed=seed,
            recipe="lora",
            lora=LoraSettings(rank),
            base_model=str(base),
        )
        started = time.perf_counter()
        folders.append(
            Path(train(base, samples, config=config, settings=settings, on_step=steps.append, tts=tts))
        )
        step_seconds.append((time.perf_counter() - started) / max(1, len(steps)))
        trainable = sum(p.numel() for p in tts.model.parameters() if p.requires_grad)
        del tts
        torch.manual_seed(0)
    return folders, min(step_seconds), trainable


def _items(seed: int) -> list[tuple[str, Any, Any]]:
    import librosa
    import numpy as np

    from voicefinetune.devtools.sample_data import reference_clip, speech_clips

    def at_24k(clip: Any) -> Any:
        return librosa.resample(clip.waveform, orig_sr=clip.sample_rate, target_sr=24000).astype(np.float32)

    ref = at_24k(reference_clip(seed=seed))
    return [(c.text, at_24k(c), ref) for c in speech_clips(4, seed=seed)]


def full_step_seconds(base: Path, root: Path) -> tuple[float, int]:
    """Seconds per optimizer step of the full fine-tune (compact recipe) on the same clips; trainable parameters."""
    from voicefinetune_trainer.codes import encode_samples
    from voicefinetune_trainer.sft import TrainConfig, load_base_model, train

    from voicefinetune.settings import Settings

    settings = Settings(device="cpu", use_flash_attn=False, data_dir=root / "data")
    tts = load_base_model(base, settings)
    samples = encode_samples(tts, _items(0))
    steps: list[float] = []
    config = TrainConfig(speaker_name="Full", num_epochs=2, batch_size=2, lr=1e-3, output_dir=root / "full")
    started = time.perf_counter()
    train(base, samples, config=config, settings=settings, on_step=steps.append, tts=tts)
    seconds = (time.perf_counter() - started) / max(1, len(steps))
    return seconds, sum(p.numel() for p in tts.model.parameters() if p.requires_grad)


def estimates_1p7b(fake: bool) -> dict[str, Any]:
    import torch
    from voicefinetune_trainer.fit import estimate_peak
    from voicefinetune_trainer.lora import LoraSettings, adapter_parameters, attach_adapters
    from voicefinetune_trainer.recipe import RECIPES
    from voicefinetune_trainer.step import trainable_parameters

    from bench.train_memory import build_model, real_config

    frames = 375
    positions = 3 + 6 + 100 + 3 + frames
    model = build_model(real_config(), torch.float32, "meta")
    full_trainable = sum(p.numel() for p in trainable_parameters(model, freeze_text_embedding=True))
    full = estimate_peak(
        model, RECIPES["compact"], device_type="cuda", batch_size=2, positions=positions, frames=frames
    )
    attach_adapters(model.talker, LoraSettings(16))
    lora_trainable = sum(p.numel() for p in adapter_parameters(model))
    lora = estimate_peak(
        model, RECIPES["lora"], device_type="cuda", batch_size=2, positions=positions, frames=frames
    )
    frozen = sum(p.numel() for n, p in model.named_parameters() if ".lora_" not in n)
    lora_fake = None
    if fake:
        from bench.train_memory import fake_peak

        options = argparse.Namespace(batch_size=2, frames=frames, text_tokens=100)
        lora_fake = fake_peak(RECIPES["lora"], options)["total"]
    return {
        "full_trainable": full_trainable,
        "lora_trainable": lora_trainable,
        "full_peak": full.total,
        "lora_peak": lora.total,
        "lora_fake_peak": lora_fake,
        "full_voice_bytes": frozen * 2,  # the bf16 checkpoint a full voice publishes (about its model's size)
        "lora_voice_bytes": lora_trainable * 4,
    }


@dataclasses.dataclass
class Served:
    service: Any
    client: httpx.AsyncClient
    jobs: list[str]


async def serve(settings: Any, name: str, folders: list[Path], speakers: list[str]) -> Served:
    from voicefinetune_inference import InferenceService, build_router

    from voicefinetune.opslog import OpsLog
    from voicefinetune.storage import Storage, checkpoint_prefix

    storage = Storage(settings)
    storage.ensure_bucket()
    service = InferenceService(settings, storage, OpsLog(settings.state_dir / "ops.jsonl"))
    await service.start()
    jobs = []
    for index, (source, speaker) in enumerate(zip(folders, speakers, strict=True)):
        job_id = f"{name}-voice-{index}"  # both services share the bucket: each its own prefixes
        folder = settings.job_dir(job_id) / "output" / "checkpoint-epoch-0"
        shutil.copytree(source, folder)
        storage.upload_dir(folder, checkpoint_prefix(job_id))
        await service.catalog.register(
            job_id, speaker, checkpoint_path=str(folder), s3_prefix=checkpoint_prefix(job_id)
        )
        jobs.append(job_id)
    app = FastAPI()
    app.include_router(build_router(service))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=600)
    return Served(service, client, jobs)


async def say(served: Served, job_id: str, text: str) -> float:
    answer = await served.client.post(f"/infer/{job_id}", json={"text": text, "upload_to_s3": False})
    answer.raise_for_status()
    info = sf.info(io.BytesIO(answer.content))
    return info.frames / info.samplerate


async def timed_say(served: Served, job_id: str) -> tuple[float, float]:
    """(seconds the request took, seconds of audio it returned)"""
    started = time.perf_counter()
    audio = await say(served, job_id, LINE)
    return time.perf_counter() - started, audio


async def switches(served: Served) -> dict[str, float]:
    """Two voices in turn, two requests each: the first after the change pays the switch, the second does not. The
    tiny models say a line in a random number of frames, so a switch costs the first request's time less what a
    same-voice request takes for that much audio (their median seconds per audio second)."""
    for job in served.jobs[:2]:
        await say(served, job, "Warm up.")
    loads_before = served.service.cache.total_loads
    first, again = [], []
    for index in range(SWITCHES):
        first.append(await timed_say(served, served.jobs[index % 2]))
        again.append(await timed_say(served, served.jobs[index % 2]))
    per_audio = statistics.median(seconds / audio for seconds, audio in again)
    return {
        "switch_seconds": statistics.median(seconds - per_audio * audio for seconds, audio in first),
        "switch_first": statistics.median(seconds for seconds, _ in first),
        "switch_same": statistics.median(seconds for seconds, _ in again),
        "switch_loads": served.service.cache.total_loads - loads_before,
    }


async def mixed(served: Served) -> dict[str, float]:
    """Every voice at once: ``REQUESTS_PER_VOICE`` concurrent requests each."""
    await say(served, served.jobs[-1], "Warm up.")
    loads_before = served.service.cache.total_loads
    texts = [
        f"Line {i}: the cast speaks in turn, one voice after another." for i in range(REQUESTS_PER_VOICE)
    ]
    started, cpu = time.perf_counter(), time.process_time()
    audio = await asyncio.gather(*(say(served, job, text) for text in texts for job in served.jobs))
    seconds = time.perf_counter() - started
    return {
        "mixed_audio_per_second": sum(audio) / seconds,
        "mixed_seconds": seconds,
        "mixed_cpu_per_audio": (time.process_time() - cpu) / sum(audio),
        "mixed_loads": served.service.cache.total_loads - loads_before,
    }


async def run(fake: bool) -> dict[str, Any]:
    import torch

    from voicefinetune.storage import Storage

    torch.set_num_threads(1)
    with local_stack("lora", gpu_max_models=1) as (work, tiny, settings):
        lora2, lora_step, lora_trainable = train_voices(Path(tiny.base), work / "train", 2, VOICES)
        (lora16,), _, lora16_trainable = train_voices(Path(tiny.base), work / "train16", 16, 1)
        full_step, full_trainable = full_step_seconds(Path(tiny.base), work / "train-full")
        results: dict[str, Any] = {}
        for name, folders, speakers, slots in (
            ("full", [Path(tiny.custom_voice)] * VOICES, ["tiny_speaker"] * VOICES, SLOTS),
            ("lora", lora2, list(SPEAKERS[:VOICES]), SLOTS),
            ("lora_cpu_slots", lora2, list(SPEAKERS[:VOICES]), CPU_SLOTS),
        ):
            served = await serve(
                dataclasses.replace(settings, data_dir=work / name, engine_slots=slots),
                name,
                folders,
                speakers,
            )
            results[name] = {} if slots == CPU_SLOTS else await switches(served)
            results[name].update(await mixed(served))
            results[name]["s3_bytes"] = sum(
                o.size for o in Storage(served.service.settings).list(f"checkpoints/{served.jobs[0]}/")
            )
            await served.client.aclose()
            await served.service.stop()
        results["bytes"] = {
            "full": folder_bytes(Path(tiny.custom_voice)),
            "lora2": folder_bytes(lora2[0]),
            "lora16": folder_bytes(lora16),
        }
        results["train"] = {
            "full_step": full_step,
            "lora_step": lora_step,
            "full_trainable": full_trainable,
            "lora2_trainable": lora_trainable,
            "lora16_trainable": lora16_trainable,
        }
        results["1p7b"] = estimates_1p7b(fake)
        results["load_average"] = os.getloadavg()
        return results


def render(r: dict[str, Any]) -> str:
    b, t, big, full, lora, lora8 = (
        r["bytes"],
        r["train"],
        r["1p7b"],
        r["full"],
        r["lora"],
        r["lora_cpu_slots"],
    )
    mib, gib = 2**20, 2**30
    aps = "mixed_audio_per_second"

    def switch(m: dict[str, float]) -> str:
        return (
            f"**{m['switch_seconds']:+.2f} s** (requests took {m['switch_first']:.2f} s after a change, "
            f"{m['switch_same']:.2f} s again; {m['switch_loads']} model loads in {SWITCHES} switches)"
        )

    def speed(ratio: float) -> str:
        return f"{ratio:.1f}× faster" if ratio >= 1 else f"{1 / ratio:.1f}× slower"

    def mix(m: dict[str, float]) -> str:
        return f"{m[aps]:.2f} audio-s/s, {m['mixed_cpu_per_audio']:.2f} CPU-s per audio-s ({m['mixed_loads']} loads)"

    fake_peak = (
        f"{big['lora_fake_peak'] / gib:.1f} GiB ({big['lora_fake_peak'] / 1e9:.1f} GB)"
        if big["lora_fake_peak"]
        else "not run (`--skip-fake`)"
    )
    return "\n".join(
        [
            "`python -m bench.lora --write-docs` on the tiny models, CPU (no GPU in this run), one thread; "
            f"{VOICES} voices, `GPU_MAX_MODELS=1`, rank-2 LoRA voices unless said; load average "
            f"{r['load_average'][0]:.1f} (1 min) / {r['load_average'][1]:.1f} (5 min) at the end of the run, on 2 "
            "shared cores.",
            "",
            "| | full voice | LoRA voice | LoRA / full |",
            "|---|---|---|---|",
            f"| bytes per voice on disk (tiny) | {b['full']:,} | {b['lora2']:,} (rank 2); {b['lora16']:,} (rank 16) "
            f"| {b['lora2'] / b['full']:.1%}; {b['lora16'] / b['full']:.1%} |",
            f"| bytes per voice in S3 (tiny) | {full['s3_bytes']:,} | {lora['s3_bytes']:,} | "
            f"{lora['s3_bytes'] / full['s3_bytes']:.1%} |",
            f"| bytes per voice, 1.7B (arithmetic, rank 16, fp32 adapter) | {big['full_voice_bytes'] / gib:.2f} GiB "
            f"| {big['lora_voice_bytes'] / mib:.0f} MiB | {big['lora_voice_bytes'] / big['full_voice_bytes']:.1%} |",
            f"| voice switch latency (median of {SWITCHES}: the first request after a change less a same-voice "
            f"request's time for as much audio) | {switch(full)} | {switch(lora)} | |",
            f"| {VOICES} voices × {REQUESTS_PER_VOICE} concurrent requests (REST API, `VFT_ENGINE_SLOTS={SLOTS}`) | "
            f"{mix(full)} | {mix(lora)} | **{speed(lora[aps] / full[aps])}**; "
            f"{full['mixed_cpu_per_audio'] / lora['mixed_cpu_per_audio']:.1f}× less CPU |",
            f"| the same, LoRA at the CPU default `VFT_ENGINE_SLOTS={CPU_SLOTS}` (two waves of 8) | | {mix(lora8)} | "
            f"{speed(lora8[aps] / full[aps])} |",
            f"| trainable parameters (tiny) | {t['full_trainable']:,} (compact) | {t['lora2_trainable']:,} (rank 2); "
            f"{t['lora16_trainable']:,} (rank 16) | {t['lora2_trainable'] / t['full_trainable']:.1%} |",
            f"| train step, batch 2 (tiny, CPU) | {t['full_step'] * 1000:.0f} ms | {t['lora_step'] * 1000:.0f} ms | "
            f"{t['lora_step'] / t['full_step']:.2f}× |",
            f"| trainable parameters, 1.7B (rank 16) | {big['full_trainable'] / 1e6:,.0f} M (compact) | "
            f"{big['lora_trainable'] / 1e6:.1f} M | {big['lora_trainable'] / big['full_trainable']:.1%} |",
            f"| training peak, 1.7B, batch 2, 30 s clips: fit-check formula (estimate) | "
            f"{big['full_peak'] / gib:.1f} GiB (compact) | {big['lora_peak'] / gib:.1f} GiB | |",
            f"| training peak, 1.7B, batch 2, 30 s clips: FakeTensor + MemTracker (estimate; `bench/train_memory.py`) "
            f"| see `bench/train_memory.py` | {fake_peak} (target ≤ 10 GB) | |",
            "",
            "Full voices at `GPU_MAX_MODELS=1` reload a model whenever the voice changes (the tiny model loads in "
            "a fraction of a second; a 1.7B checkpoint takes seconds), and their requests cannot share a batch. "
            "LoRA voices share the resident Base model: the adapters are attached once and each batch row adds "
            "its own; a decode loop's rows gather their adapters' matrices once, not at every forward. The 1.7B "
            "rows are arithmetic and estimates, not measurements: no GPU was lent. The timings come from one run on "
            "a shared 2-core machine (load average above): wall-clock figures vary about 2× between runs; the "
            "CPU seconds per audio second vary less.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write-docs", action="store_true", help=f"replace the section of {DOCS.name}")
    parser.add_argument(
        "--skip-fake", action="store_true", help="no FakeTensor run of the 1.7B LoRA step (it takes minutes)"
    )
    args = parser.parse_args(argv)
    text = render(asyncio.run(run(fake=not args.skip_fake)))
    print(text)
    if args.write_docs:
        write_section(SECTION, text)
        print(f"\nwritten to {DOCS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
