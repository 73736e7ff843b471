"""Whole utterances in one batched call through the engine the model was loaded with (``VFT_ENGINE``).

Upstream's ``generate_*`` (`tts_model.call_upstream`) builds the prompts and decodes the audio; the decode loop
between is ours (`fast_engine`) or upstream's own ``talker.generate``. `stream.py` is the streamed counterpart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np

from voicefinetune.resampling import to_sample_rate
from voicefinetune_inference.engine.tts_model import LoadedModel, SpeechItem, call_upstream


def generate(
    loaded: LoadedModel, items: list[SpeechItem], *, on_ready: Callable[[int, np.ndarray], None] | None = None
) -> list[np.ndarray]:
    """One batched generate call for ``items``; waveforms (float32, 24 kHz) in the same order.

    With the fast engine and ``on_ready``, a row that ends before the rest of the batch is decoded at once and handed
    to ``on_ready(index, waveform)`` (in this thread); its place in the returned list is then an empty array."""
    from voicefinetune_inference.engine import (
        fast_engine,
    )  # torch: imported with the first call, not the server
    from voicefinetune_inference.engine.early_results import RowDelivery

    options = fast_engine.CallOptions(frame_limits=[fast_engine.frame_bound(item.text) for item in items])
    # each row's own draws: the continuous loop takes them, the one-call loop shares one generator instead
    if any(item.seed is not None for item in items):
        options.seeds = [item.seed for item in items]
    delivery: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if on_ready is not None and loaded.engine == "fast" and len(items) > 1:
        references = (
            [getattr(item.clone_prompt, "ref_code", None) for item in items]
            if loaded.kind == "base"
            else None
        )
        rows = RowDelivery(loaded.tts, on_ready, references)
        options.on_row_done = rows.row_done
        delivery = rows.skipping_delivered()
    with fast_engine.decoding(loaded, options), delivery:
        wavs, rate = call_upstream(loaded, items)
    return [to_sample_rate(w, rate) for w in wavs]
