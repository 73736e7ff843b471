"""Operations dispatched per decoded frame (talker step + the code predictor's 15 steps) on the 1.7B architecture.

The released Qwen3-TTS-12Hz-1.7B architecture (`bench.train_step.QWEN3_TTS_1_7B_BASE`) is built with fake tensors
(`FakeTensorMode`: meta storage, shapes only, no memory, no compute) and each decode path the engine has runs its
real code under a `TorchDispatchMode` counter. Each aten operation is a kernel launch on a GPU (views excepted): at
batch 1 a frame's time on a GPU is mostly the launching of these, unless it is captured as a CUDA graph.

Fake tensors hold no values, so the counter answers the reads a loop makes of its tensors (``bool(...)``,
``.item()``, ``.tolist()``: `aten._local_scalar_dense`) with zeros (no row ever ends) and counts them as host
synchronisations. Per frame = (ops for prompt + n + 1 frames) - (ops for prompt + n frames), so the prefill and
setup are left out. Paths measured, whichever exist:

- ``fast``: the engine's one-call decode loop (`engine.decode.run`, through `fast_engine.substituted`), stopped
  between frames by its ``should_stop``;
- ``slot step``: the continuous loop's graph-ready step (``engine.slot_step.SlotDecoder.frame``) when the engine
  has one; one call is one frame.

Upstream's own ``talker.generate`` is not counted: Hugging Face's loop decides when to stop from tensor values, which
fake tensors do not have (answered with zeros, its code predictor never stops).

    .venv/bin/python -m bench.ops_per_frame [--batch 1] [--write-docs]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

from bench.results import write_section  # noqa: E402
from voicefinetune.devtools.op_count import OpCounter  # noqa: E402

SECTION = "## Ops per frame (`bench/ops_per_frame.py`)"
PROMPT = 24  # prompt positions (any length: the per-frame count does not depend on it)
TRAILING = 8  # trailing text positions
TARGET = 0.5  # the target: the graph-ready step at most half of today's fast engine


# what reads a value back (FakeTensorMode would decompose `is_nonzero`, from `bool(t)`, below this mode's reach)
HOST_READS = (
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.is_nonzero.default,
    torch.ops.aten.item.default,
)


def _copied(func: Any, args: tuple[Any, ...], out: Any) -> bool:
    """An operation that may alias its input but made a copy (a cast ``to``, a ``reshape`` or ``contiguous`` of
    strided data: inference mode dispatches these whole, before they decompose into the copy a GPU launches)."""
    if func.namespace != "aten" or not func.is_view:
        return False
    source = args[0] if args else None
    if not isinstance(out, torch.Tensor) or not isinstance(source, torch.Tensor):
        return False
    return bool(out.untyped_storage()._cdata != source.untyped_storage()._cdata)


class FakeOpCounter(OpCounter):
    """`OpCounter` over fake tensors: reads of a tensor's values on the host are answered with zero and counted;
    an aliasing operation that copied counts as computing."""

    def __init__(self) -> None:
        super().__init__()
        self.host_reads = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if func in HOST_READS:
            self.host_reads += 1
            return False if args[0].dtype == torch.bool else 0
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if _copied(func, args, out):
            self.views -= 1
            self.computing += 1
        return out


def counted(fake: FakeTensorMode, work: Callable[[], Any]) -> dict[str, int]:
    with fake, FakeOpCounter() as counter:
        work()
    return {"computing": counter.computing, "views": counter.views, "host_reads": counter.host_reads}


def fake_model(fake: FakeTensorMode, config: dict[str, Any] | None = None) -> Any:
    """The model of ``config`` (default: the released 1.7B Base's) with fake weights."""
    from bench.train_step import QWEN3_TTS_1_7B_BASE
    from voicefinetune.qwen import import_qwen_tts

    import_qwen_tts()
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    config = Qwen3TTSConfig(**(config or QWEN3_TTS_1_7B_BASE))
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with fake:
            return Qwen3TTSForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)


def generate_kwargs(model: Any, batch: int, frames: int, sampling: bool) -> dict[str, Any]:
    """What upstream's ``generate_*`` hands ``talker.generate`` (prompt embeddings, masks, settings)."""
    talker = model.config.talker_config
    hidden = talker.hidden_size
    like = {"dtype": torch.bfloat16}
    return {
        "inputs_embeds": torch.zeros(batch, PROMPT, hidden, **like),
        "attention_mask": torch.ones(batch, PROMPT, dtype=torch.long),
        "trailing_text_hidden": torch.zeros(batch, TRAILING, hidden, **like),
        "tts_pad_embed": torch.zeros(1, 1, hidden, **like),
        "max_new_tokens": frames,
        "min_new_tokens": 2,
        "do_sample": sampling,
        "top_k": 50,
        "top_p": 1.0,
        "temperature": 0.9,
        "subtalker_dosample": sampling,
        "subtalker_top_k": 50,
        "subtalker_top_p": 1.0,
        "subtalker_temperature": 0.9,
        "eos_token_id": talker.codec_eos_token_id,
        "repetition_penalty": 1.05,
        "suppress_tokens": [
            i for i in range(talker.vocab_size - 1024, talker.vocab_size) if i != talker.codec_eos_token_id
        ],
        "output_hidden_states": True,
        "return_dict_in_generate": True,
    }


def per_frame(fake: FakeTensorMode, model: Any, run: Callable[[int], Any], frames: int = 2) -> dict[str, int]:
    def fresh(frames: int) -> None:
        # the prefill computes rotary deltas when none are kept (upstream's test of `cache_position[0] == 0` reads a
        # value a fake tensor does not have): every run starts as on a freshly loaded model
        model.talker.rope_deltas = None
        run(frames)

    more, fewer = counted(fake, lambda: fresh(frames + 1)), counted(fake, lambda: fresh(frames))
    return {key: more[key] - fewer[key] for key in more}


def fast(fake: FakeTensorMode, model: Any, batch: int, sampling: bool) -> dict[str, int]:
    from voicefinetune_inference.engine import decode, fast_engine

    def run(frames: int) -> None:
        seen = [0]

        def on_frame(*_: Any) -> None:
            seen[0] += 1

        options = fast_engine.CallOptions(on_frame=on_frame, should_stop=lambda: seen[0] >= frames)
        try:
            with fast_engine.substituted(model, options):
                model.talker.generate(**generate_kwargs(model, batch, 4 * frames, sampling))
        except decode.GenerationCancelled:
            pass

    return per_frame(fake, model, run)


def slot_step(fake: FakeTensorMode, model: Any, batch: int, sampling: bool) -> dict[str, int] | None:
    if importlib.util.find_spec("voicefinetune_inference.engine.slot_step") is None:
        return None
    from voicefinetune_inference.engine.slot_step import SlotDecoder

    with fake, torch.inference_mode():
        step = SlotDecoder(
            model.talker, slots=batch, capacity=PROMPT + 64, like=torch.zeros(1, dtype=torch.bfloat16)
        )
    with torch.inference_mode():
        # the loop passes ``sampling=decoder.samples(bucket)``: the draws are left out when every row is greedy
        return counted(fake, lambda: step.frame(batch, PROMPT + 8, sampling=sampling))


PATHS: dict[str, Callable[[FakeTensorMode, Any, int, bool], dict[str, int] | None]] = {
    "fast engine (`decode.run`)": fast,
    "graph-ready slot step (`slot_step.SlotDecoder.frame`)": slot_step,
}


MODES = {"greedy": False, "sampled": True}
FAST, STEP = PATHS
# the step as first written (commit e88a5a5), counted by the counter of then, which took copies for views
FIRST_COUNT = "7,090 (fast engine 5,381)"


def measure(batch: int) -> dict[tuple[str, str], dict[str, int] | str]:
    """Every path in every mode, keyed by (mode, path)."""
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    model = fake_model(fake)
    results: dict[tuple[str, str], dict[str, int] | str] = {}
    for mode, sampling in MODES.items():
        for name, path in PATHS.items():
            try:
                counts = path(fake, model, batch, sampling)
            except Exception as exc:  # noqa: BLE001 - a path that cannot run on fake tensors is reported
                counts = f"not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            results[mode, name] = counts if counts is not None else "not in this engine"
            print(mode, name, results[mode, name], flush=True)
    return results


def report(results: dict[tuple[str, str], dict[str, int] | str], batch: int, seconds: float) -> str:
    lines = [
        f"Qwen3-TTS-12Hz-1.7B architecture (talker 28 layers, code predictor 5 layers x 15 steps), bf16, fake "
        f"tensors (no compute), batch {batch}, counted with a `TorchDispatchMode` in inference mode "
        f"({platform.machine()}, torch {torch.__version__}, {seconds:.0f} s, load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}). "
        '"computing": aten operations that launch work (at least one kernel each on a GPU), casts and copies made '
        'by operations that may alias (`to`, `reshape`, `contiguous`) included; "views": aliasing only; "host '
        'reads": values the loop reads back on the host per frame (each a synchronisation on a GPU).',
        "",
        "| decoding | decode path | ops per frame (computing) | views | host reads |",
        "|---|---|---|---|---|",
    ]
    for (mode, name), counts in results.items():
        if isinstance(counts, str):
            lines.append(f"| {mode} | {name} | {counts} | | |")
        else:
            lines.append(
                f"| {mode} | {name} | {counts['computing']:,} | {counts['views']:,} | {counts['host_reads']} |"
            )
    lines.append("")
    for mode in MODES:
        fast_counts, step_counts = results.get((mode, FAST)), results.get((mode, STEP))
        if isinstance(fast_counts, dict) and isinstance(step_counts, dict):
            share = step_counts["computing"] / fast_counts["computing"]
            verdict = "meets" if share <= TARGET else "misses"
            lines.append(
                f"- {mode}: slot step vs fast engine {share:.0%} of the operations (target ≤ {TARGET:.0%}: "
                f"{verdict})."
            )
    lines += [
        "",
        f"The slot step as first written counted {FIRST_COUNT} per greedy frame with the counter of then, which "
        "took casts and copies for views. Now each layer runs q/k/v and gate/up as one matmul each, q_norm and "
        "k_norm as one `rms_norm`, one rotation of queries and keys together from a per-position table read once per "
        "step, and SDPA directly with grouped keys; a greedy bucket (`SlotDecoder.samples`) leaves the draws out. "
        "Counting rules to read it by: `aten.rms_norm` and `aten.scaled_dot_product_attention` count as one operation "
        "each, as inference mode dispatches them (on CUDA torch runs `rms_norm` as one fused kernel, "
        "`_fused_rms_norm`; on CPU it decomposes); on CUDA the talker's masked attention repeats keys and values "
        "first (its kernels take grouped keys only without a mask): 2 more operations per talker layer, 56 per "
        "frame, not in the CPU count above.",
        "",
        "Upstream's `talker.generate` is not counted (its stopping decisions read tensor values, which fake tensors "
        "lack). No GPU was lent for this run: kernel launch times, CUDA graph capture and the real-time factor on "
        "CUDA are not measured.",
    ]
    return "\n".join(lines)


def table(batch: int = 1) -> str:
    """The docs section: every path the engine has, greedy and sampled, counted now."""
    started = time.monotonic()
    results = measure(batch)
    return report(results, batch, time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    text = table(args.batch)
    print(text)
    if args.write_docs:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
