"""The fast engine's hook into qwen_tts: upstream builds the prompt, our loop decodes, upstream post-processes.

`substituted(model, options)` replaces ``talker.generate`` on one loaded model (an instance attribute, removed on
exit, so the class's own method is untouched); callers hold the model's lock around it. Upstream's `generate_*`
assembles ``inputs_embeds``, the attention mask, trailing text and pad embeddings and calls ``talker.generate``;
the replacement runs `fast_decode.run` on them and answers in the shape upstream unpacks (``hidden_states`` as
``(hidden, codes)`` pairs, finished rows marked with EOS), so upstream's EOS cut and voice-clone trimming still apply.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from voicefinetune_inference.engine import decode as fast_decode
from voicefinetune_inference.engine.sampling import SamplingParams
from voicefinetune_inference.engine.urgency import Urgency

if TYPE_CHECKING:
    from voicefinetune_inference.engine.scheduler import DecodeLoop
    from voicefinetune_inference.engine.tts_model import LoadedModel

# A row may not run past this many frames (80 ms each) for its text: generous for slow speech in any language
# (about 3 frames per character is slow Chinese), yet a runaway row cannot hold a batch for 8,192 frames.
FRAMES_BASE = 60
FRAMES_PER_CHAR = 6


def frame_bound(text: str) -> int:
    """The most codebook-0 ids one row of ``text`` may take (upstream's ``max_new_tokens`` still caps it)."""
    return FRAMES_BASE + FRAMES_PER_CHAR * len(text)


@dataclass
class CallOptions:
    """Per call: frame bounds per row, for streaming a per-frame callback and a stop check, and a callback for
    each row that ends before the rest of its batch (`early_results`)."""

    frame_limits: list[int] | None = None
    on_frame: fast_decode.FrameCallback | None = None
    on_row_done: fast_decode.RowCallback | None = None
    should_stop: Callable[[], bool] | None = None
    generator: torch.Generator | None = None
    # The continuous loop: per row, the seed of its draws (a row without one, and every row where this is None:
    # drawn from ``generator`` or torch's own)
    seeds: list[int | None] | None = None
    # The continuous loop: admitted before look-ahead work while urgent (the default: a caller waits on it)
    urgency: Urgency | None = None


class _TalkerOutput:
    """What upstream reads from ``talker.generate``: ``hidden_states``, one ``(hidden, codes)`` pair per step."""

    def __init__(self, hidden_states: list[tuple[Any, Any]]):
        self.hidden_states = hidden_states


def _as_upstream_output(
    codes: list[torch.Tensor], eos_id: int, groups: int, device: torch.device
) -> _TalkerOutput:
    frames = max([len(c) for c in codes] + [1])
    padded = torch.zeros(len(codes), frames, groups, dtype=torch.long, device=device)
    padded[:, :, 0] = eos_id  # rows end at their first EOS frame, as upstream's rows do
    for row, row_codes in enumerate(codes):
        padded[row, : len(row_codes)] = row_codes
    # upstream also gathers one hidden state per step and then discards it: hand it a 1-wide placeholder
    placeholder = (torch.zeros(len(codes), 1, 1, device=device),)
    return _TalkerOutput([(placeholder, None)] + [(placeholder, padded[:, step]) for step in range(frames)])


def _job(talker: Any, kwargs: dict[str, Any], options: CallOptions) -> fast_decode.DecodeJob:
    embeds = kwargs["inputs_embeds"]
    most = int(kwargs.get("max_new_tokens") or 2048)
    limits = [most] * embeds.shape[0]
    if options.frame_limits is not None:
        limits = [min(most, int(bound)) for bound in options.frame_limits]
    eos = kwargs.get("eos_token_id")
    penalty = kwargs.get("repetition_penalty")
    return fast_decode.DecodeJob(
        inputs_embeds=embeds,
        attention_mask=kwargs["attention_mask"],
        trailing_text_hidden=kwargs["trailing_text_hidden"],
        tts_pad_embed=kwargs["tts_pad_embed"],
        talker=SamplingParams(
            do_sample=bool(kwargs.get("do_sample", True)),
            top_k=int(kwargs.get("top_k") or 0),
            top_p=float(kwargs.get("top_p", 1.0) or 1.0),
            temperature=float(kwargs.get("temperature") or 1.0),
        ),
        predictor=SamplingParams(
            do_sample=bool(kwargs.get("subtalker_dosample", True)),
            top_k=int(kwargs.get("subtalker_top_k") or 0),
            top_p=float(kwargs.get("subtalker_top_p", 1.0) or 1.0),
            temperature=float(kwargs.get("subtalker_temperature") or 1.0),
        ),
        eos_id=int(eos if eos is not None else talker.config.codec_eos_token_id),
        frame_limits=limits,
        repetition_penalty=float(penalty) if penalty is not None else 1.0,
        min_new_tokens=int(kwargs.get("min_new_tokens") or 0),
        suppress_ids=list(kwargs.get("suppress_tokens") or []),
        generator=options.generator,
    )


def supported(talker: Any) -> bool:
    """The loop attends over every cached position: a checkpoint with sliding-window attention keeps upstream's."""
    predictor_types = getattr(talker.code_predictor.config, "layer_types", None) or []
    return not getattr(talker.config, "sliding_window", None) and all(
        t == "full_attention" for t in predictor_types
    )


@contextlib.contextmanager
def substituted(model: Any, options: CallOptions | None = None) -> Iterator[None]:
    """Within this block, ``model.talker.generate`` (``model``: a ``Qwen3TTSForConditionalGeneration``) is ours."""
    talker = model.talker
    options = options or CallOptions()

    def generate(**kwargs: Any) -> Any:
        if not supported(talker):
            return type(talker).generate(talker, **kwargs)
        job = _job(talker, kwargs, options)
        codes = fast_decode.run(
            talker,
            job,
            on_frame=options.on_frame,
            should_stop=options.should_stop,
            on_row_done=options.on_row_done,
        )
        return _as_upstream_output(codes, job.eos_id, talker.config.num_code_groups, job.inputs_embeds.device)

    talker.generate = generate
    try:
        yield
    finally:
        del talker.generate


@contextlib.contextmanager
def engine_for(model: Any, engine: str, options: CallOptions | None = None) -> Iterator[None]:
    """The chosen engine for one call (``Settings.engine``, checked there): ours (``fast``) or upstream's own
    ``talker.generate`` (``upstream``)."""
    if engine == "upstream":
        yield
        return
    with substituted(model, options):
        yield


# --- the continuous loop (``VFT_SCHEDULER=continuous``) -----------------------------------------------------------

STOP_POLL_SECONDS = 0.05  # how often a waiting caller checks ``should_stop`` while no frame arrives
_calls = threading.local()  # the options of the upstream call this thread is making


def _seeds(rows: int, options: CallOptions) -> list[int]:
    """Each row's seed: its own where given, else drawn (only for those rows: torch's generator moves no further)."""
    given = options.seeds if options.seeds is not None else [None] * rows
    missing = sum(seed is None for seed in given)
    drawn = iter(torch.randint(0, 2**62, (missing,), generator=options.generator).tolist() if missing else [])
    return [int(next(drawn)) if seed is None else seed for seed in given]


def _through_loop(loop: DecodeLoop, job: fast_decode.DecodeJob, options: CallOptions) -> list[torch.Tensor]:
    """(the caller's thread) Submit ``job`` to ``loop`` and wait for its rows, running the callbacks here."""
    request = loop.submit(job, _seeds(job.inputs_embeds.shape[0], options), options.urgency)
    delivered = (
        -1
    )  # the last frame handed to ``on_frame``: a request the loop took back out redoes its frames
    try:
        while True:
            if options.should_stop is not None and options.should_stop():
                raise fast_decode.GenerationCancelled("generation stopped: its consumer went away")
            try:
                event = request.events.get(timeout=STOP_POLL_SECONDS)
            except queue.Empty:
                continue
            if event[0] == "frame" and event[1] > delivered:
                delivered = event[1]
                if options.on_frame is not None:
                    options.on_frame(event[1], event[2], event[3])
            elif event[0] == "row" and options.on_row_done is not None:
                options.on_row_done(event[1], event[2])
            elif event[0] == "end":
                return list(event[1])
            elif event[0] == "error":
                raise event[1]
    except BaseException:
        request.cancel()
        loop.wake()
        raise


def attach(model: Any, loop: DecodeLoop) -> None:
    """From now on ``model.talker.generate`` runs in ``loop`` (for the model's lifetime), with the options the
    calling thread set with `routed`; upstream's prompt building and decoding stay in the calling thread."""
    talker = model.talker

    def generate(**kwargs: Any) -> Any:
        options = getattr(_calls, "options", None) or CallOptions()
        job = _job(talker, kwargs, options)
        codes = _through_loop(loop, job, options)
        device = job.inputs_embeds.device
        return _as_upstream_output(
            [c.to(device) for c in codes], job.eos_id, talker.config.num_code_groups, device
        )

    talker.generate = generate


@contextlib.contextmanager
def routed(options: CallOptions | None = None) -> Iterator[None]:
    """This thread's upstream calls within the block reach the continuous loop with ``options``."""
    previous = getattr(_calls, "options", None)
    _calls.options = options or CallOptions()
    try:
        yield
    finally:
        _calls.options = previous


@contextlib.contextmanager
def decoding(loaded: LoadedModel, options: CallOptions | None = None) -> Iterator[None]:
    """One upstream call's decoding: through the model's continuous loop when it has one (no model lock: the loop
    alone runs the talker), else under the model's lock with the engine it was loaded with."""
    if loaded.decode_loop is not None:
        with routed(options):
            yield
        return
    with loaded.lock, engine_for(loaded.tts.model, loaded.engine, options):
        yield
