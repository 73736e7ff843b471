"""On CUDA: the continuous loop's frame step on the 1.7B architecture (random weights, bf16), CUDA graphs on vs off.

Issue 19's GPU figures: one stream's real-time factor and first audio, and audio seconds per wall second at 16 and
64 concurrent streams, each with ``VFT_CUDA_GRAPHS`` on and off. The rows decode in one `slot_step.SlotDecoder`
(the continuous loop's buffers and step) driven as `scheduler.DecodeLoop` drives it: upstream's talker prefill of
each row's prompt, `admit`, then one frame for all rows per 80 ms of audio, replayed from the bucket's graph
(`cuda_graphs.StepGraphs` with a `CudaRecorder`, recorded before any row joins, as the loop does) or run eagerly
over the span the loop would choose. First audio is one row's prefill, admit and first frame, synchronised; the
codec's decode of that frame is not in it. Random weights choose random codes: a row that picks EOS runs on (its
end flag is not read), so every case times the same number of frames.

Without CUDA every row reads "not measured (no GPU)": `--cuda-only` runs just this part, e.g. on a lent GPU:

    .venv/bin/python -m bench.engine --cuda-only [--write-docs]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.results import load_average

SECTION = "## Continuous loop on CUDA: graphs on vs off (`bench/engine.py --cuda-only`)"
STREAMS = (1, 16, 64)
PROMPT = 64  # prompt positions per row (a sentence with its instructions)
FRAMES = 64  # frames timed per case: 5.1 s of audio per row
FRAME_SECONDS = 0.08  # 12.5 frames per second of audio
NOT_MEASURED = "not measured (no GPU)"


@dataclass(frozen=True)
class Case:
    streams: int
    graphs: bool
    audio_per_second: float  # audio seconds per wall second, all rows together
    first_audio: float  # seconds: one row's prefill, admit and first frame
    graph_bytes: int
    graphs_missing: str | None = None  # graphs asked for but not captured: the reason `/gpu/status` gives


def real_size_talker() -> Any:
    """The 1.7B Base talker with random weights in bf16 on the GPU, SDPA attention (a step under flash attention
    cannot be captured: `cuda_graphs.StepGraphs.for_talker`)."""
    import torch

    from bench.train_step import real_size_model

    model = real_size_model("sdpa")
    return model.to(torch.bfloat16).eval().talker


def prefill(talker: Any, generator: Any) -> Any:
    """Upstream's talker forward over one random prompt, as the loop's admission calls it."""
    import torch

    device, dtype = talker.codec_head.weight.device, talker.codec_head.weight.dtype
    hidden = talker.config.hidden_size
    embeds = 0.02 * torch.randn(1, PROMPT, hidden, generator=generator, device=device).to(dtype)
    return talker(
        inputs_embeds=embeds,
        attention_mask=torch.ones(1, PROMPT, dtype=torch.long, device=device),
        use_cache=True,
        cache_position=torch.arange(PROMPT, device=device),
        trailing_text_hidden=torch.zeros(1, 1, hidden, dtype=dtype, device=device),
        tts_pad_embed=torch.zeros(1, 1, hidden, dtype=dtype, device=device),
    )


def admit(decoder: Any, slot: int, result: Any, talker: Any) -> None:
    from voicefinetune_inference.engine.sampling import SamplingParams

    hidden = talker.config.hidden_size
    zeros = result.past_hidden.new_zeros(hidden)
    sampled = SamplingParams(
        do_sample=True, top_k=50, top_p=1.0, temperature=0.9
    )  # the checkpoints' defaults
    decoder.admit(
        slot,
        keys=[layer.keys[0] for layer in result.past_key_values.layers],
        values=[layer.values[0] for layer in result.past_key_values.layers],
        logits=result.logits[0, -1].float(),
        past_hidden=result.past_hidden[0],
        start=PROMPT + int(talker.rope_deltas.view(-1)[0]),
        trailing=zeros[None],
        pad=zeros,
        limit=10**6,
        min_new=2,
        eos=talker.config.codec_eos_token_id,
        penalty=1.05,
        suppressed=None,
        talker=sampled,
        predictor=sampled,
        seed=slot,
    )


def run_case(talker: Any, streams: int, graphs: bool, frames: int = FRAMES) -> Case:
    import torch
    from voicefinetune_inference.engine.cuda_graphs import StepGraphs
    from voicefinetune_inference.engine.scheduler import INITIAL_CAPACITY, SPAN_STEP
    from voicefinetune_inference.engine.slot_step import SlotDecoder

    device = talker.codec_head.weight.device
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.inference_mode():
        result = prefill(talker, generator)
        decoder = SlotDecoder(talker, slots=streams, capacity=INITIAL_CAPACITY, like=result.past_hidden)
        steps = StepGraphs.for_talker(talker, enabled=graphs)
        steps.capture(decoder, [streams])

        def frame(length: int) -> None:
            span = min(decoder.capacity, -(-(length + 1) // SPAN_STEP) * SPAN_STEP)
            steps.frame(decoder, streams, span)

        frame(
            PROMPT
        )  # eager: the kernels' first-call costs (the graphs' warm-up already paid them); no row yet
        synchronize(device)
        started = time.perf_counter()
        admit(decoder, 0, prefill(talker, generator), talker)
        frame(PROMPT)
        decoder.out[:1].to("cpu")  # the loop's one read per frame
        first_audio = time.perf_counter() - started
        for slot in range(1, streams):
            admit(decoder, slot, result, talker)
        synchronize(device)
        started = time.perf_counter()
        for n in range(frames):
            frame(PROMPT + 1 + n)
            decoder.out[:streams].to("cpu")
        wall = time.perf_counter() - started
        status = steps.status(decoder)
        steps.release()
    missing = status["reason"] if graphs and not status["captured"] else None
    return Case(
        streams, graphs, streams * frames * FRAME_SECONDS / wall, first_audio, status["bytes"], missing
    )


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure() -> list[Case]:
    talker = real_size_talker()
    return [run_case(talker, streams, graphs) for streams in STREAMS for graphs in (False, True)]


def render(cases: list[Case] | None) -> str:
    """The table; ``cases`` None (no GPU): every figure reads "not measured (no GPU)"."""
    lines = [
        "`python -m bench.engine --cuda-only --write-docs`: the continuous loop's step (`SlotDecoder` with",
        "`cuda_graphs.StepGraphs`) on the 1.7B Base architecture with random weights in bf16 and SDPA attention (a",
        "talker under flash attention gets no graphs), sampled rows (top-k 50, temperature 0.9), a",
        f"{PROMPT}-position prompt per row, {FRAMES} frames timed per case. First audio: one row's prefill, admit and",
        "first frame (the codec's decode of that frame is not included).",
        "",
        "| Streams | CUDA graphs | Audio s per wall s | Real-time factor per stream | First audio ms | Graph memory MiB |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    if cases is None:
        for streams in STREAMS:
            for graphs in ("off", "on"):
                lines.append(
                    f"| {streams} | {graphs} | {NOT_MEASURED} | {NOT_MEASURED} | {NOT_MEASURED} | — |"
                )
        lines += [
            "",
            "- No GPU was available where this was run: none of these figures is measured, and the CUDA capture",
            "  (`cuda_graphs.CudaRecorder`) has not run yet; on CPU only its discipline is tested, with a stand-in",
            "  recorder (tests/inference/engine/test_cuda_graphs.py). On a lent GPU: `python -m bench.engine",
            "  --cuda-only --write-docs` (one short run: 6 cases of 64 frames).",
        ]
        return "\n".join(lines)
    import torch

    for case in cases:
        graphs = "on" if case.graphs else "off"
        if case.graphs_missing:
            graphs = f"on, not captured ({case.graphs_missing}): eager"
        lines.append(
            f"| {case.streams} | {graphs} | {case.audio_per_second:.1f} "
            f"| {case.audio_per_second / case.streams:.2f}x | {case.first_audio * 1000:.0f} "
            f"| {case.graph_bytes / 2**20:.0f} |"
        )
    load = load_average()
    lines += [
        "",
        f"- {torch.cuda.get_device_name()}, torch {torch.__version__}, load average {load:.1f}; measured "
        f"{time.strftime('%Y-%m-%d')}. Targets (issue 19): ≥ 4x real time for one stream, first audio ≤ 150 ms,",
        "  ≥ 100 audio s per wall s at 64 streams.",
    ]
    return "\n".join(lines)


def table() -> str:
    import torch

    return render(measure() if torch.cuda.is_available() else None)
