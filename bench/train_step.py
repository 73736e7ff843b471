"""Training steps per second: the tiny model on CPU and, when CUDA is there, the real 1.7B sizes on GPU.

Both run the trainer's own step (`voicefinetune_trainer.step` and `.batching`: batch building, talker +
sub-talker loss, backward, grad clip, AdamW) on synthetic samples of the same shape: `--frames` codec frames
(12.5 per second of audio) and `--text-tokens` text tokens per clip. The GPU model is the public Qwen3-TTS-12Hz-1.7B-Base
architecture with random weights (nothing is downloaded), fp32 master weights under bf16 autocast, flash
attention when `flash_attn` imports (sdpa otherwise): the `seed` recipe (`VFT_TRAIN_RECIPE=seed`);
`bench/train_memory.py` compares it with the `compact` default.

    python -m bench.train_step [--steps 20] [--batch-sizes 2] [--cpu-threads 1,2] [--frames 125] [--text-tokens 40]

Prints a markdown table (one row per model × batch size).

    python -m bench.train_step --optimizer-ops [--write-docs]

counts instead the operations one optimizer step dispatches for the 1.7B architecture's trained tensors (on the meta
device: no memory, no GPU), one tensor at a time against the chunked update; `--write-docs` writes that table into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from voicefinetune_trainer.batching import ROLE_TOKENS, PreparedSample, build_batch  # noqa: E402
from voicefinetune_trainer.optim import STEP_TEMPORARY_BYTES, CompactAdamW  # noqa: E402
from voicefinetune_trainer.recipe import RECIPES  # noqa: E402
from voicefinetune_trainer.step import make_optimizer, train_step, trainable_parameters  # noqa: E402

from bench.results import write_section  # noqa: E402
from voicefinetune.devtools.op_count import OpCounter  # noqa: E402
from voicefinetune.qwen import choose_runtime, flash_attn_available, import_qwen_tts, load_model  # noqa: E402
from voicefinetune.settings import Settings  # noqa: E402

OPS_SECTION = "## Optimizer operations per step (`bench/train_step.py --optimizer-ops`)"

FRAMES_PER_SECOND = 12.5

# Sizes of the public Qwen/Qwen3-TTS-12Hz-1.7B-Base config.json (its token ids included).
QWEN3_TTS_1_7B_BASE: dict[str, Any] = {
    "architectures": ["Qwen3TTSForConditionalGeneration"],
    "model_type": "qwen3_tts",
    "tokenizer_type": "qwen3_tts_tokenizer_12hz",
    "tts_model_size": "1b7",
    "tts_model_type": "base",
    "im_start_token_id": 151644,
    "im_end_token_id": 151645,
    "tts_pad_token_id": 151671,
    "tts_bos_token_id": 151672,
    "tts_eos_token_id": 151673,
    "speaker_encoder_config": {"enc_dim": 2048, "sample_rate": 24000},
    "talker_config": {
        "vocab_size": 3072,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000,
        "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "interleaved": True},
        "num_code_groups": 16,
        "text_hidden_size": 2048,
        "text_vocab_size": 151936,
        "codec_pad_id": 2148,
        "codec_bos_id": 2149,
        "codec_eos_token_id": 2150,
        "codec_think_id": 2154,
        "codec_nothink_id": 2155,
        "codec_think_bos_id": 2156,
        "codec_think_eos_id": 2157,
        "codec_language_id": {"english": 2050, "chinese": 2055},
        "spk_id": {},
        "spk_is_dialect": {},
        "code_predictor_config": {
            "vocab_size": 2048,
            "hidden_size": 1024,
            "intermediate_size": 3072,
            "num_hidden_layers": 5,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 65536,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000,
            "num_code_groups": 16,
        },
    },
}


@dataclass
class Result:
    model: str
    device: str
    dtype: str
    attention: str
    batch_size: int
    params: int
    step_seconds: list[float]
    peak_memory_gb: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.step_seconds)


def synthetic_samples(
    model: Any, count: int, frames: int, text_tokens: int, seed: int
) -> list[PreparedSample]:
    config = model.config
    talker = config.talker_config
    generator = torch.Generator().manual_seed(seed)
    text_vocab = min(
        talker.text_vocab_size, config.im_start_token_id
    )  # ordinary tokens sit below the specials
    return [
        PreparedSample(
            role_ids=torch.randint(0, text_vocab, (ROLE_TOKENS,), generator=generator),
            text_ids=torch.randint(0, text_vocab, (text_tokens,), generator=generator),
            codes=torch.randint(
                0,
                talker.code_predictor_config.vocab_size,
                (frames, talker.num_code_groups),
                generator=generator,
            ),
            speaker_embedding=torch.randn(talker.hidden_size, generator=generator) * 0.02,
        )
        for _ in range(count)
    ]


def measure(
    model: Any, batch_size: int, args: argparse.Namespace, autocast: torch.dtype | None
) -> list[float]:
    """Seconds per optimizer step after `args.warmup` unmeasured steps."""
    device = next(model.parameters()).device
    samples = synthetic_samples(model, batch_size, args.frames, args.text_tokens, seed=batch_size)
    parameters = trainable_parameters(model)
    optimizer = make_optimizer(parameters, lr=1e-6, weight_decay=0.01)
    model.talker.train()
    times = []
    for index in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        batch = build_batch(samples, model.config).to(device)
        parts = train_step(
            model, optimizer, batch=batch, parameters=parameters, grad_clip=1.0, autocast_dtype=autocast
        )
        parts.total.item()  # waits for the step, like train()'s progress event
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    del optimizer
    return times


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in trainable_parameters(model))


def bench_tiny_cpu(args: argparse.Namespace) -> list[Result]:
    from voicefinetune.devtools.tiny_models import ensure_tiny_models

    root = Path(args.tiny_dir or Path(tempfile.gettempdir()) / "vft-bench-tiny-models")
    settings = Settings.from_env({"DEVICE": "cpu", "USE_FLASH_ATTN": "0", "VFT_DATA_DIR": str(root)})
    runtime = choose_runtime(settings)
    model = load_model(ensure_tiny_models(root).base, settings, runtime).model
    results = []
    default_threads = torch.get_num_threads()
    for threads in args.cpu_threads or [default_threads]:
        torch.set_num_threads(threads)
        for size in args.batch_sizes:
            times = measure(model, size, args, autocast=None)
            device = f"cpu, {threads} thread{'s' if threads > 1 else ''}"
            params = count_parameters(model)
            results.append(
                Result("tiny (random)", device, "float32", runtime.attn_implementation, size, params, times)
            )
    torch.set_num_threads(default_threads)
    return results


def real_size_model(attention: str) -> Any:
    """The 1.7B Base architecture with random weights, built directly on the GPU."""
    import_qwen_tts()
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    config = Qwen3TTSConfig(**QWEN3_TTS_1_7B_BASE)
    config._attn_implementation = attention
    with torch.device("cuda"):
        model = Qwen3TTSForConditionalGeneration(config)
    model.speaker_encoder.requires_grad_(False).eval()
    return model


def bench_real_gpu(args: argparse.Namespace) -> list[Result]:
    attention = "flash_attention_2" if flash_attn_available() else "sdpa"
    model = real_size_model(attention)
    results = []
    for size in args.batch_sizes:
        torch.cuda.reset_peak_memory_stats()
        times = measure(model, size, args, autocast=torch.bfloat16)
        peak = torch.cuda.max_memory_allocated() / 2**30
        results.append(
            Result(
                "1.7B sizes (random)",
                torch.cuda.get_device_name(),
                "fp32 + bf16 autocast",
                attention,
                size,
                count_parameters(model),
                times,
                peak,
            )
        )
        torch.cuda.empty_cache()
    return results


def real_size_meta_model() -> Any:
    """The 1.7B architecture on the meta device (shapes and dtypes, no memory)."""
    import_qwen_tts()
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    with torch.device("meta"):
        return Qwen3TTSForConditionalGeneration(Qwen3TTSConfig(**QWEN3_TTS_1_7B_BASE))


def real_size_parameters() -> int:
    """Trainable parameters of the 1.7B architecture, counted on the meta device (no memory)."""
    return count_parameters(real_size_meta_model())


@dataclass
class OptimizerOps:
    variant: str
    tensors: int
    updates: int  # chunks (CompactAdamW) or per-tensor/foreach update passes, counted as `lerp_` operations
    counter: OpCounter


def optimizer_ops() -> list[OptimizerOps]:
    """Operations of the second optimizer step (the first creates the state) for the trained tensors of the 1.7B
    architecture as each recipe trains them on CUDA, on the meta device."""
    rows = []
    variants = (
        (
            "compact",
            "CompactAdamW, one tensor at a time (`chunk_elements=1`: the update before chunking)",
            {"chunk_elements": 1},
        ),
        ("compact", "CompactAdamW, chunks up to the largest tensor (now)", {}),
        ("seed", "torch AdamW, foreach (the `seed` recipe on CUDA)", None),
    )
    for recipe_name, variant, options in variants:
        recipe = RECIPES[recipe_name]
        model = real_size_meta_model().to(recipe.weights_dtype("cuda"))
        parameters = trainable_parameters(model, freeze_text_embedding=recipe.freeze_text_embedding)
        if options is None:
            optimizer = torch.optim.AdamW(parameters, lr=1e-6, weight_decay=0.01, foreach=True)
        else:
            optimizer = CompactAdamW(
                parameters, lr=1e-6, weight_decay=0.01, state_dtype=recipe.state_dtype, **options
            )
        for parameter in parameters:
            parameter.grad = torch.empty_like(parameter)
        optimizer.step()
        with OpCounter() as counter:
            optimizer.step()
        updates = counter.by_name["aten.lerp_.Scalar"] + counter.by_name["aten._foreach_lerp_.Scalar"]
        rows.append(OptimizerOps(variant, len(parameters), updates, counter))
    return rows


def optimizer_ops_table(rows: list[OptimizerOps]) -> str:
    model = real_size_meta_model()
    trained = trainable_parameters(model, freeze_text_embedding=RECIPES["compact"].freeze_text_embedding)
    largest = max(parameter.numel() for parameter in trained)
    before, now = rows[0].counter.computing, rows[1].counter.computing
    lines = [
        "`python -m bench.train_step --optimizer-ops --write-docs`: the aten operations one optimizer step dispatches "
        "for the trained tensors of the Qwen3-TTS-12Hz-1.7B-Base architecture, as each recipe trains them on CUDA "
        "(compact: bf16 weights + int16 extensions, bf16 moments, text embedding frozen; seed: fp32 weights and "
        "moments). Counted by a `TorchDispatchMode` (`voicefinetune.devtools.op_count`) during the second step, on "
        "the meta device: the optimizer runs the same Python code and dispatches the same aten operations as on a "
        "GPU (random numbers included), without memory or values. Nothing here ran on a GPU; no time is measured.",
        "",
        "| optimizer | trained tensors | updates (chunks) | operations that compute | views | all dispatched |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        counter = row.counter
        lines.append(
            f"| {row.variant} | {row.tensors} | {row.updates} | {counter.computing:,} | {counter.views:,} | "
            f"{counter.computing + counter.views:,} |"
        )
    lines += [
        "",
        f"CompactAdamW now dispatches **{before / now:.1f}× fewer** computing operations per step ({before:,} → "
        f"{now:,}).",
        "",
        "- Each computing operation is at least one kernel launch on a GPU (a foreach copy may be several: "
        "`_foreach_copy_` launches one kernel per group of tensors); views only alias memory and launch nothing.",
        f"- A chunk joins tensors of one kind into flat fp32 buffers of at most {largest / 1e6:.2f} M elements (the "
        f"largest trained tensor), so the step's temporaries stay those of one tensor: {STEP_TEMPORARY_BYTES} bytes "
        f"per element ({largest * STEP_TEMPORARY_BYTES / 2**30:.2f} GiB), which the fit check counts. Larger chunks "
        "would cut operations further at the price of memory; the tensors left alone in their chunk are the "
        "largest, whose kernels move tens of MB each, where a launch's few microseconds matter least.",
        f"- torch's foreach AdamW: {rows[2].counter.by_name['aten._local_scalar_dense.default']:,} of its operations "
        "read its step counters, which live on the CPU (no launch); the rest are foreach operations over every tensor "
        "at once, with a temporary the size of a whole fp32 moment. The compact recipe's bf16 moments need "
        "stochastic rounding, which has no foreach form, and the step must stay within one tensor's temporaries.",
        "- One tensor at a time, the step dispatches exactly what the per-tensor update before chunking did (its "
        "code counted the same way gave the same figures).",
        f"- Counted {time.strftime('%Y-%m-%d')}, torch {torch.__version__}.",
    ]
    return "\n".join(lines)


def table(results: list[Result], args: argparse.Namespace, gpu_note: str | None) -> str:
    audio_seconds = args.frames / FRAMES_PER_SECOND
    lines = [
        f"Clips of {args.frames} frames ({audio_seconds:.0f} s of audio) + {args.text_tokens} text tokens; "
        f"median of {args.steps} steps after {args.warmup} warm-up steps.",
        "",
        "| model | device | dtype | attention | batch | trainable params | steps/s | ms/step | audio s/s | peak GPU mem |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        memory = f"{r.peak_memory_gb:.1f} GiB" if r.peak_memory_gb is not None else "-"
        lines.append(
            f"| {r.model} | {r.device} | {r.dtype} | {r.attention} | {r.batch_size} | {r.params / 1e6:,.2f} M "
            f"| {1 / r.median:.2f} | {r.median * 1000:.1f} | {r.batch_size * audio_seconds / r.median:.1f} | {memory} |"
        )
    if gpu_note:
        lines.append(
            f"| 1.7B sizes (random) | - | fp32 + bf16 autocast | - | - | "
            f"{real_size_parameters() / 1e6:,.2f} M | {gpu_note} | - | - | - |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20, help="measured steps per row")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-sizes", type=lambda v: [int(x) for x in v.split(",")], default=[2])
    parser.add_argument("--frames", type=int, default=125, help="codec frames per clip (12.5 per second)")
    parser.add_argument("--text-tokens", type=int, default=40)
    parser.add_argument("--tiny-dir", help="where the tiny models are (built there when missing)")
    parser.add_argument(
        "--cpu-threads",
        type=lambda v: [int(x) for x in v.split(",")],
        help="torch threads per CPU row, e.g. 1,2",
    )
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument(
        "--optimizer-ops", action="store_true", help="count one optimizer step's operations instead"
    )
    parser.add_argument(
        "--write-docs", action="store_true", help="with --optimizer-ops: write its docs section"
    )
    args = parser.parse_args(argv)
    if args.optimizer_ops:
        text = optimizer_ops_table(optimizer_ops())
        print(text)
        if args.write_docs:
            write_section(OPS_SECTION, text)
        return 0

    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} CPU threads, load average {os.getloadavg()[0]:.1f}",
        file=sys.stderr,
    )
    results = bench_tiny_cpu(args)
    gpu_note = None
    if args.skip_gpu:
        gpu_note = "skipped (--skip-gpu)"
    elif torch.cuda.is_available():
        results += bench_real_gpu(args)
    else:
        gpu_note = "not measured: no CUDA device in this environment"
    print(table(results, args, gpu_note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
