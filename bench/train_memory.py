"""Training memory and disk: today's configuration (the `seed` recipe) next to the new default (`compact`).

- GPU memory of one training step of the real Qwen3-TTS-12Hz-1.7B-Base architecture (random weights) at batch 2
  with 30 s clips, by category, estimated on CPU without allocating it: the trainer's own step
  (`voicefinetune_trainer.step`) on `FakeTensorMode` tensors under `MemTracker`; next to it the fit check's
  analytic estimate (`voicefinetune_trainer.fit`); measured with `torch.cuda.max_memory_allocated` too when CUDA
  is there.
- The peak scratch disk of a tiny-model training run (`sft.train`, 3 epochs) as a multiple of its published
  checkpoint, and how many trained weights of the published checkpoint differ from the base at the default lr.
- Train steps/s of both recipes on the tiny model (CPU), interleaved.

    python -m bench.train_memory [--json] [--write-docs] [--frames 375] [--text-tokens 100] [--skip-fake]

`--json` ends the output with one JSON line (`peak_bytes_default`, `peak_bytes_before`, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from voicefinetune_trainer import sft  # noqa: E402
from voicefinetune_trainer.batching import build_batch  # noqa: E402
from voicefinetune_trainer.fit import estimate_peak  # noqa: E402
from voicefinetune_trainer.lora import LoraSettings, adapter_parameters, attach_adapters  # noqa: E402
from voicefinetune_trainer.recipe import RECIPES, Recipe  # noqa: E402
from voicefinetune_trainer.step import make_optimizer, train_step, trainable_parameters  # noqa: E402

from bench.results import DOCS, write_section  # noqa: E402
from bench.train_step import QWEN3_TTS_1_7B_BASE, synthetic_samples  # noqa: E402
from voicefinetune.qwen import import_qwen_tts, load_model  # noqa: E402
from voicefinetune.settings import Settings  # noqa: E402

SECTION = "## Training memory and disk (`bench/train_memory.py`)"
GIB = 2**30
CATEGORIES = ("parameters", "gradients", "optimizer", "activations", "temporaries")
BEFORE, DEFAULT, LORA = "seed", "compact", "lora"
RECIPE_NAMES = (BEFORE, DEFAULT, LORA)
LORA_RANK = 16


def real_config(attention: str = "sdpa") -> Any:
    import_qwen_tts()
    from qwen_tts.core.models import Qwen3TTSConfig

    config = Qwen3TTSConfig(**QWEN3_TTS_1_7B_BASE)
    config._attn_implementation = attention
    return config


def build_model(config: Any, dtype: torch.dtype, device: str = "cpu") -> Any:
    from qwen_tts.core.models import Qwen3TTSForConditionalGeneration

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return Qwen3TTSForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)


def prepare(
    model: Any, recipe: Recipe, device_type: str
) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer]:
    """As `sft.train` sets a model up for `device_type` (the fake run stands for CUDA)."""
    model.speaker_encoder.requires_grad_(False).eval()
    if recipe.checkpointing(device_type):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if recipe.adapters_only:  # method lora: rank-16 adapters on every projection, as `sft.train` injects them
        attach_adapters(model.talker, LoraSettings(LORA_RANK))
        parameters = adapter_parameters(model)
    else:
        parameters = trainable_parameters(model, freeze_text_embedding=recipe.freeze_text_embedding)
    model.talker.train()
    return parameters, make_optimizer(parameters, 1e-6, 0.01, recipe.state_dtype)


def materialise(model: torch.nn.Module) -> None:
    """(under FakeTensorMode) Give a meta-device model empty tensors of the same shapes and dtypes in place (tied
    tensors stay tied)."""
    made: dict[int, torch.Tensor] = {}

    def fresh(tensor: torch.Tensor, parameter: bool) -> torch.Tensor:
        if id(tensor) not in made:
            empty = torch.empty(tensor.shape, dtype=tensor.dtype)
            made[id(tensor)] = (
                torch.nn.Parameter(empty, requires_grad=tensor.requires_grad) if parameter else empty
            )
        return made[id(tensor)]

    for module in model.modules():
        for name, parameter in module._parameters.items():
            if parameter is not None:
                module._parameters[name] = fresh(parameter, True)  # type: ignore[assignment]
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = fresh(buffer, False)


def fake_peak(recipe: Recipe, args: argparse.Namespace, config: Any = None) -> dict[str, int]:
    """Bytes by category at the peak of the second step (the first creates the optimizer state), on fake tensors.

    Benchmark-only adjustments: transformers' sdpa mask shortcut reads tensor values, so the explicit mask path is
    forced; the whole loss runs inside one module, because MemTracker refuses modules called twice at top level;
    frozen parameters get no gradient hooks (MemTracker would register some on every parameter); a LoRA model gets
    its adapters on the meta device and is then materialised as fake tensors."""
    import transformers.masking_utils as masking
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType
    from voicefinetune_trainer import step as step_module
    from voicefinetune_trainer.loss import sft_loss

    original_mask = masking._ignore_causal_mask_sdpa
    masking._ignore_causal_mask_sdpa = lambda *a, **k: False
    config = config or real_config()
    with torch.device("meta"):
        meta = build_model(config, torch.float32, "meta")
    batch = build_batch(
        synthetic_samples(meta, args.batch_size, args.frames, args.text_tokens, seed=0), config
    )
    del meta

    class WholeLoss(torch.nn.Module):
        def __init__(self, model: Any):
            super().__init__()
            self.model = model

        def forward(self, batch: Any) -> Any:
            return sft_loss(self.model, batch)

    class NoHook:
        def remove(self) -> None:
            pass

    original_loss = step_module.sft_loss
    if recipe.adapters_only:  # PEFT places new adapters by swapping tensors, which fake tensors refuse
        model = build_model(config, recipe.weights_dtype("cuda"), "meta")
        prepare(model, recipe, "cuda")
    with FakeTensorMode() as mode:
        if recipe.adapters_only:
            materialise(model)
            parameters = adapter_parameters(model)
            optimizer = make_optimizer(parameters, 1e-6, 0.01, recipe.state_dtype)
        else:
            model = build_model(config, recipe.weights_dtype("cuda"))
            parameters, optimizer = prepare(model, recipe, "cuda")
        fake = type(batch)(
            **{k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in vars(batch).items()}
        )
        whole = WholeLoss(model)
        step_module.sft_loss = lambda _model, one: whole(one)
        try:
            options = {
                "parameters": parameters,
                "grad_clip": 1.0,
                "autocast_dtype": recipe.autocast_dtype("cuda"),
            }
            train_step(model, optimizer, batch=fake, **options)
            tracker = MemTracker()
            tracker.track_external(whole, optimizer)
            for parameter in model.parameters():
                if not parameter.requires_grad:
                    tracker._param_to_grad_hook_handles[parameter] = (NoHook(), NoHook())
            with tracker:
                train_step(model, optimizer, batch=fake, **options)
            (snapshot,) = tracker.get_tracker_snapshot("peak").values()
        finally:
            step_module.sft_loss = original_loss
            masking._ignore_causal_mask_sdpa = original_mask
    kinds = {
        "parameters": (_MemRefType.PARAM, _MemRefType.BUFFER),
        "gradients": (_MemRefType.GRAD,),
        "optimizer": (_MemRefType.OPT,),
        "activations": (_MemRefType.ACT,),
        "temporaries": (_MemRefType.TEMP, _MemRefType.OTH),
    }
    peak = {name: sum(int(snapshot.get(kind, 0)) for kind in group) for name, group in kinds.items()}
    peak["total"] = int(snapshot["Total"])
    return peak


def analytic_peak(recipe: Recipe, args: argparse.Namespace) -> dict[str, int]:
    config = real_config()
    model = build_model(config, torch.float32, "meta")
    if recipe.adapters_only:
        attach_adapters(model.talker, LoraSettings(LORA_RANK))
    positions = 3 + 6 + args.text_tokens + 3 + args.frames
    estimate = estimate_peak(
        model, recipe, device_type="cuda", batch_size=args.batch_size, positions=positions, frames=args.frames
    )
    return {**{name: getattr(estimate, name) for name in CATEGORIES}, "total": estimate.total}


def cuda_peak(recipe: Recipe, args: argparse.Namespace) -> int | None:
    if not torch.cuda.is_available():
        return None
    model = build_model(real_config(), recipe.weights_dtype("cuda"), "cuda")
    parameters, optimizer = prepare(model, recipe, "cuda")
    batch = build_batch(
        synthetic_samples(model, args.batch_size, args.frames, args.text_tokens, 0), model.config
    )
    torch.cuda.reset_peak_memory_stats()
    for _ in range(3):
        train_step(
            model,
            optimizer,
            batch=batch.to("cuda"),
            parameters=parameters,
            grad_clip=1.0,
            autocast_dtype=recipe.autocast_dtype("cuda"),
        )
    peak = torch.cuda.max_memory_allocated()
    del model, parameters, optimizer
    torch.cuda.empty_cache()
    return int(peak)


# ----- the tiny model: disk, export fidelity, steps/s ---------------------------------------------------------------


def new_bytes(folder: Path, shared: set[tuple[int, int]]) -> int:
    """Bytes of the files under `folder` whose data is not already on disk elsewhere (hard links to the base)."""
    seen, total = set(shared), 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total


def tiny_disk_and_export(tiny_base: Path, settings: Settings, epochs: int) -> dict[str, Any]:
    import librosa
    import numpy as np
    from safetensors.torch import load_file
    from voicefinetune_trainer.codes import encode_samples

    from voicefinetune.devtools.sample_data import reference_clip, speech_clips

    def at_24k(clip: Any) -> np.ndarray:
        return librosa.resample(clip.waveform.astype(np.float32), orig_sr=clip.sample_rate, target_sr=24000)

    base_files = {(p.stat().st_dev, p.stat().st_ino) for p in tiny_base.rglob("*") if p.is_file()}
    tts = load_model(tiny_base, settings)
    ref = at_24k(reference_clip())
    samples = encode_samples(tts, [(c.text, at_24k(c), ref) for c in speech_clips(4)])
    output = Path(tempfile.mkdtemp(prefix="vft-bench-disk-")) / "output"
    peak = 0
    original_export = sft.export_checkpoint

    def measuring_export(*a: Any, **k: Any) -> Path:
        nonlocal peak
        folder = original_export(*a, **k)
        peak = max(peak, new_bytes(output, base_files))  # before older checkpoints are removed
        return folder

    sft.export_checkpoint = measuring_export
    try:
        config = sft.TrainConfig(
            speaker_name="Bench", num_epochs=epochs, batch_size=2, lr=1e-6, output_dir=output
        )
        final = sft.train(tiny_base, samples, config=config, settings=settings, on_step=lambda _e: None)
    finally:
        sft.export_checkpoint = original_export
    published = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    base = load_file(str(tiny_base / "model.safetensors"))
    exported = load_file(str(final / "model.safetensors"))
    # frozen tensors, and the codec embedding whose speaker row the export overwrites, are left out
    left_out = ("speaker_encoder.", "talker.model.text_embedding.", "talker.model.codec_embedding.")
    names = [n for n in exported if n in base and not n.startswith(left_out)]
    total = sum(exported[n].numel() for n in names)
    changed = sum(int((exported[n] != base[n]).sum()) for n in names)
    changed_bf16 = sum(int((exported[n].bfloat16() != base[n].bfloat16()).sum()) for n in names)
    shutil.rmtree(output.parent, ignore_errors=True)
    return {
        "scratch_peak_bytes": peak,
        "published_bytes": published,
        "scratch_peak_ratio": peak / published,
        "stored_dtype": str(next(iter(base.values())).dtype).removeprefix("torch."),
        "trained_elements": total,
        "changed_fraction": changed / total,
        "changed_fraction_bf16": changed_bf16 / total,
    }


def tiny_steps_per_second(tiny_base: Path, settings: Settings, steps: int, rounds: int) -> dict[str, float]:
    models = {name: load_model(tiny_base, settings).model for name in (BEFORE, DEFAULT)}
    runs = {name: prepare(models[name], RECIPES[name], "cpu") for name in models}
    batch = build_batch(synthetic_samples(models[DEFAULT], 2, 125, 40, seed=2), models[DEFAULT].config)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, (parameters, optimizer) in runs.items():
            train_step(
                models[name],
                optimizer,
                batch=batch,
                parameters=parameters,
                grad_clip=1.0,
                autocast_dtype=None,
            )
            start = time.perf_counter()
            for _ in range(steps):
                train_step(
                    models[name],
                    optimizer,
                    batch=batch,
                    parameters=parameters,
                    grad_clip=1.0,
                    autocast_dtype=None,
                )
            times[name].append((time.perf_counter() - start) / steps)
    return {name: 1 / statistics.median(values) for name, values in times.items()}


SPEECH_TOKENIZER_BYTES = (
    682e6  # Qwen3-TTS-Tokenizer-12Hz's model.safetensors, from the public listing: not measured here
)


def disk_arithmetic() -> dict[str, float]:
    """1.7B scratch disk in bytes, from the parameter counts: published checkpoint, and the training peak before and
    now (normal epochs; a run that stops early)."""
    model = build_model(real_config(), torch.float32, "meta")
    exported = 2 * sum(p.numel() for n, p in model.named_parameters() if not n.startswith("speaker_encoder."))
    trained_before = sum(p.numel() for p in trainable_parameters(model))
    trained_now = sum(p.numel() for p in trainable_parameters(model, freeze_text_embedding=True))
    published = exported + SPEECH_TOKENIZER_BYTES
    # before: 2 kept checkpoints + the one being written, each with a copied speech tokenizer, and fp32 moments in
    # the latest until the next is complete
    before = 3 * published + 2 * 8 * trained_before
    return {
        "published": published,
        "before": before,
        "now": 2 * exported,  # the newest checkpoint and the one being written; tokenizer files are links
        "stopped_early": exported + 4 * trained_now,  # one checkpoint + bf16 moments
    }


# ----- report -------------------------------------------------------------------------------------------------------


def gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    fake, analytic, cuda = results["fake"], results["analytic"], results["cuda"]
    seconds = args.frames / 12.5
    lines = [
        f"1.7B Base architecture (random weights), batch {args.batch_size}, clips of {args.frames} codec frames "
        f"({seconds:.0f} s) + {args.text_tokens} text tokens, one training step (GiB). `seed`: today's configuration "
        "(fp32 weights, gradients and AdamW moments for all 1.92 B parameters, bf16 autocast); `compact`: the new "
        "default (text embedding frozen, bf16 weights + int16 extension = fp32-precise master weights, bf16 AdamW "
        "moments with stochastic rounding, gradient checkpointing); `lora`: `method: lora` (rank-16 adapters on every "
        "attention and MLP projection train in fp32 with fp32 AdamW moments, the base frozen in bf16 — fp16 on a "
        "card without bf16 —, gradient checkpointing).",
        "",
        "| recipe | source | parameters | gradients | optimizer | activations | temporaries | peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in RECIPE_NAMES:
        if fake.get(name):
            f = fake[name]
            lines.append(
                f"| {name} | FakeTensor + MemTracker (CPU, estimate) | "
                + " | ".join(gib(f[c]) for c in CATEGORIES)
                + f" | **{gib(f['total'])}** |"
            )
        a = analytic[name]
        lines.append(
            f"| {name} | fit-check formula (estimate) | "
            + " | ".join(gib(a[c]) for c in CATEGORIES)
            + f" | {gib(a['total'])} |"
        )
        lines.append(
            f"| {name} | `torch.cuda.max_memory_allocated` | - | - | - | - | - | "
            + (gib(cuda[name]) if cuda[name] is not None else "not measured: no GPU was available")
            + " |"
        )
    disk, speed = results["disk"], results["speed"]
    best = {name: cuda[name] or (fake.get(name) or analytic[name])["total"] for name in RECIPE_NAMES}
    lora_note = (
        "PEFT places new adapters by swapping tensors, which fake tensors refuse (`Couldn't swap Linear.weight`): "
        "the `lora` fake run attaches them on the meta device, then gives the model fake tensors of the same "
        "shapes and dtypes (`materialise`). The fp16 path of cards without bf16 has the same element sizes, so the "
        "same peak."
    )
    lines += [
        "",
        f"Peak of one 1.7B step: new default **{best[DEFAULT] / 1e9:.1f} GB** ({best[DEFAULT] / GIB:.2f} GiB; target "
        f"≤ 20 GB, so a 24 GB card fits it; a 16 GB card does not), today's {best[BEFORE] / 1e9:.1f} GB; a LoRA "
        f"voice **{best[LORA] / 1e9:.1f} GB** (target ≤ 10 GB: a 16 GB card fits it).",
        "",
        "MemTracker reports each category at the moment of the peak (the seed recipe peaks at the end of the forward, "
        "the compact one at the optimizer step, when activations are gone); the formula adds the categories of the "
        "phase that peaks. On CUDA the seed recipe's foreach AdamW adds a temporary the size of one moment "
        "(≈ 7.2 GiB) that the CPU fake run does not allocate. " + lora_note,
        "",
        "| tiny model, CPU | seed | compact |",
        "|---|---|---|",
        f"| train steps/s (batch 2, 125 frames, median of {args.rounds} interleaved rounds) | "
        f"{speed[BEFORE]:.2f} | {speed[DEFAULT]:.2f} |",
        "",
        f"Tiny run, 3 epochs at lr 1e-6 (compact): peak scratch disk {disk['scratch_peak_bytes'] / 1e6:.2f} MB = "
        f"**{disk['scratch_peak_ratio']:.2f}×** its published checkpoint ({disk['published_bytes'] / 1e6:.2f} MB; "
        "speech tokenizer and tokenizer files hard-linked to the base, one epoch checkpoint kept, no optimizer state "
        "on disk unless the run stops early). Trained weights of the published checkpoint that differ from the base: "
        f"{disk['changed_fraction']:.1%} as stored ({disk['stored_dtype']}); {disk['changed_fraction_bf16']:.1%} "
        "after rounding both to bf16, the dtype the released 1.7B stores. The tiny talker is initialised with std ≈ 0.3, "
        "about 15× the 1.7B's typical |w| ≈ 0.02, so its bf16 steps are ~15× coarser against lr 1e-6 updates: the "
        "1.7B's export keeps a larger share, which this CPU-only run cannot measure. On CUDA the compact recipe's model "
        "computes with the nearest bf16 value of each fp32-precise master weight, and the export writes exactly those "
        "values: the published voice computes exactly as the trained model did.",
        "",
        "1.7B scratch disk, arithmetic from the parameter counts (GB; the speech tokenizer's "
        f"{SPEECH_TOKENIZER_BYTES / 1e9:.2f} GB is the public listing's figure): published checkpoint "
        f"{results['arith']['published'] / 1e9:.1f}; training peak before {results['arith']['before'] / 1e9:.1f} "
        f"({results['arith']['before'] / results['arith']['published']:.1f}×), now "
        f"{results['arith']['now'] / 1e9:.1f} ({results['arith']['now'] / results['arith']['published']:.1f}×), or "
        f"{results['arith']['stopped_early'] / 1e9:.1f} "
        f"({results['arith']['stopped_early'] / results['arith']['published']:.1f}×) when a run stops early and "
        "leaves its optimizer state for a resume; plus the base model (4.5) and the dataset.",
        "",
        f"No GPU was available for this run: every 1.7B figure above is an estimate. Measured {time.strftime('%Y-%m-%d')}, "
        f"torch {torch.__version__}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--frames", type=int, default=375, help="codec frames per clip (12.5 per second)")
    parser.add_argument("--text-tokens", type=int, default=100)
    parser.add_argument("--steps", type=int, default=5, help="tiny steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--skip-fake", action="store_true", help="formula only (the fake-tensor runs take minutes)"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--write-docs", action="store_true", help=f"replace the section of {DOCS.name}")
    args = parser.parse_args(argv)

    from voicefinetune.devtools.tiny_models import ensure_tiny_models

    root = Path(tempfile.gettempdir()) / "vft-bench-tiny-models"
    settings = Settings.from_env({"DEVICE": "cpu", "USE_FLASH_ATTN": "0", "VFT_DATA_DIR": str(root)})
    tiny_base = Path(ensure_tiny_models(root).base)
    torch.set_num_threads(1)
    results: dict[str, Any] = {
        "speed": tiny_steps_per_second(tiny_base, settings, args.steps, args.rounds),
        "disk": tiny_disk_and_export(tiny_base, settings, epochs=3),
        "analytic": {name: analytic_peak(RECIPES[name], args) for name in RECIPE_NAMES},
        "cuda": {name: cuda_peak(RECIPES[name], args) for name in RECIPE_NAMES},
        "fake": {},
        "arith": disk_arithmetic(),
    }
    torch.set_num_threads(os.cpu_count() or 1)
    if not args.skip_fake:
        results["fake"] = {name: fake_peak(RECIPES[name], args) for name in RECIPE_NAMES}
    text = table(results, args)
    print(text)
    if args.write_docs:
        write_section(SECTION, text)
        print(f"\nwritten to {DOCS}", file=sys.stderr)
    if args.json:
        source = results["fake"] or results["analytic"]
        figures = {
            "peak_bytes_default": results["cuda"][DEFAULT] or source[DEFAULT]["total"],
            "peak_bytes_before": results["cuda"][BEFORE] or source[BEFORE]["total"],
            "peak_source": "cuda"
            if results["cuda"][DEFAULT]
            else ("fake_tensor" if results["fake"] else "formula"),
            "estimate_bytes_default": source[DEFAULT]["total"],
            "estimate_bytes_before": source[BEFORE]["total"],
            "peak_bytes_lora": results["cuda"][LORA] or source[LORA]["total"],
            "scratch_peak_ratio": round(results["disk"]["scratch_peak_ratio"], 3),
            "scratch_peak_ratio_1p7b": round(
                max(results["arith"]["now"], results["arith"]["stopped_early"])
                / results["arith"]["published"],
                3,
            ),
            "export_changed_fraction": round(results["disk"]["changed_fraction"], 4),
            "export_changed_fraction_bf16": round(results["disk"]["changed_fraction_bf16"], 4),
            "steps_per_s_before": round(results["speed"][BEFORE], 3),
            "steps_per_s_default": round(results["speed"][DEFAULT], 3),
        }
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
