"""A fused batch hands each row's waveform on at the row's own end (fast engine), equal to the batched call's row.

The parity tests decode in float64: the speech tokenizer's decoder is causal, so a row decoded alone is the row of
the right-padded batched decode, but in float32 the two differ by rounding (about 1e-5 on a 0.7 peak, since tensor
shapes differ; the same row in two different batches differs as much). In float64 they agree to about 1e-14, and
what comes back (float32) agrees to 1e-6.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import types

import numpy as np
import pytest
from voicefinetune_inference.engine import batch, fast_engine, tts_model
from voicefinetune_inference.engine import decode as fast_decode
from voicefinetune_inference.engine.early_results import RowDelivery
from voicefinetune_inference.serving import generation
from voicefinetune_inference.serving.batcher import Batcher

from .engine_helpers import CPU, GREEDY, decoded_codes, load_tiny
from .test_fast_engine import LONG, SHORT, items_for


@pytest.fixture(scope="module")
def models(tiny_models):
    loaded = {kind: load_tiny(tiny_models, kind) for kind in ("custom_voice", "voice_design", "base")}
    for model in loaded.values():
        model.tts.model.speech_tokenizer.model.double()
    return loaded


def batched(loaded, items, engine, *, limits=None, deliver=False, **kwargs):
    """The batched call's waveforms; with ``deliver``, also the rows handed on early and every row decoded."""
    early: dict[int, np.ndarray] = {}
    options = fast_engine.CallOptions(frame_limits=limits)
    delivery = contextlib.nullcontext()
    if deliver:
        references = (
            [getattr(i.clone_prompt, "ref_code", None) for i in items] if loaded.kind == "base" else None
        )
        rows = RowDelivery(loaded.tts, early.__setitem__, references)
        options.on_row_done = rows.row_done
        delivery = rows.skipping_delivered()
    with (
        decoded_codes(loaded) as decoded,
        fast_engine.engine_for(loaded.tts.model, engine, options),
        delivery,
    ):
        wavs, _ = tts_model.call_upstream(loaded, items, **kwargs)
    return wavs, early, decoded


@pytest.mark.parametrize("kind", ["custom_voice", "voice_design", "base"])
def test_each_early_row_equals_the_batched_calls_row(models, kind):
    """Rows bounded at 8 and 16 ids end before the third: each is delivered then, equal to what the batched call
    (without early delivery) returns for it; the batch's own decode leaves them out, so every row is decoded once."""
    loaded = models[kind]
    items = items_for(loaded, [SHORT, LONG, "Medium length words here."])
    limits = [8, 16, 24]
    want, _, _ = batched(loaded, items, "fast", limits=limits, max_new_tokens=24, **GREEDY)
    got, early, decoded = batched(
        loaded, items, "fast", limits=limits, deliver=True, max_new_tokens=24, **GREEDY
    )
    assert sorted(early) == [0, 1]
    assert len(decoded) == 3  # rows 0 and 1 alone, row 2 in the batch's own decode
    for row in (0, 1):
        assert early[row].dtype == np.float32 and early[row].shape == want[row].shape
        np.testing.assert_allclose(early[row], want[row], rtol=0, atol=1e-6)
        assert len(got[row]) == 0
    np.testing.assert_allclose(got[2], want[2], rtol=0, atol=1e-6)
    assert [len(w) for w in want] == [7 * 1920, 15 * 1920, 23 * 1920]
    if kind == "base":  # the reference codes are decoded first and trimmed off, as upstream does for each row
        assert len(decoded[0]) == len(items[0].clone_prompt.ref_code) + 7


def test_rows_ended_by_eos_equal_upstreams_rows(models):
    """Rows ending at their own EOS (the tiny voice-design talker, greedy): early waveforms equal upstream's."""
    loaded = models["voice_design"]
    items = items_for(loaded, ["x", "ab", "Hi."])
    want, _, _ = batched(loaded, items, "upstream", max_new_tokens=60, **GREEDY)
    got, early, _ = batched(loaded, items, "fast", deliver=True, max_new_tokens=60, **GREEDY)
    last = max(range(3), key=lambda row: len(want[row]))
    assert sorted(early) == sorted(set(range(3)) - {last})
    for row in range(3):
        np.testing.assert_allclose(early.get(row, got[row]), want[row], rtol=0, atol=1e-6)


class _OneModel:
    """The generator's model cache, reduced to one loaded model."""

    def __init__(self, loaded):
        self.loaded = loaded

    @contextlib.asynccontextmanager
    async def use(self, spec):
        yield self.loaded


async def test_a_short_row_is_delivered_while_the_long_one_still_runs(tiny_models, monkeypatch):
    """Through the generator's batcher: "x" (bounded at 65 frames) and a long line are fused into one call. The short
    result resolves after 65 talker steps; the generating thread is held there until the test has seen it (so the
    count is exact) and the long one is still unfinished; it ends afterwards, further steps later."""
    loaded = load_tiny(tiny_models, "custom_voice")
    loaded.tts.generate_defaults.update(GREEDY, max_new_tokens=120)
    steps = [0]
    seen = threading.Event()
    real_step, real_row_done = fast_decode._Talker.step, RowDelivery.row_done

    def step(self, *args, **kwargs):
        steps[0] += 1
        return real_step(self, *args, **kwargs)

    def row_done(self, row, codes):
        real_row_done(self, row, codes)
        assert seen.wait(60)

    monkeypatch.setattr(fast_decode._Talker, "step", step)
    monkeypatch.setattr(RowDelivery, "row_done", row_done)
    settings = dataclasses.replace(CPU, inference_batch_window_ms=100, inference_max_batch=4)
    generator = generation.Generator(settings, _OneModel(loaded), outputs=None)
    spec = types.SimpleNamespace(key="voice", kind="custom_voice")
    submit = generator.batcher.submit
    try:
        short = asyncio.create_task(submit("voice", generation._Work(spec, items_for(loaded, ["x"])[0])))
        long = asyncio.create_task(submit("voice", generation._Work(spec, items_for(loaded, [LONG])[0])))
        short_wav = await asyncio.wait_for(short, 120)
        steps_at_short = steps[0]
        assert not long.done()
        seen.set()
        long_wav = await asyncio.wait_for(long, 120)
    finally:
        seen.set()
        await generator.batcher.close()
        generator.shutdown()
    assert generator.batcher.calls == 1 and generator.batcher.largest_batch == 2
    assert steps_at_short == 65 and steps[0] > steps_at_short  # the long row ends (EOS) at frame 71
    assert short_wav.shape == (65 * 1920,) and long_wav.shape == (steps[0] * 1920,)


async def test_the_batcher_drops_the_final_result_of_a_delivered_item():
    async def run(key, items, *, deliver):
        deliver(0, "early")
        deliver(1, ValueError("row 1 failed early"))
        return ["late", "late", "late"]

    batcher = Batcher(run, window_seconds=0.01, max_batch=4, delivers=True)
    results = await batcher.submit_many("k", ["a", "b", "c"])
    assert results[0] == "early" and isinstance(results[1], ValueError) and results[2] == "late"
    await batcher.close()


def test_with_the_upstream_engine_nothing_is_delivered_early(tiny_models):
    """VFT_ENGINE=upstream: ``on_ready`` is never called and every row comes back from the batched call."""
    loaded = load_tiny(tiny_models, "voice_design", engine="upstream")
    loaded.tts.generate_defaults.update(GREEDY, max_new_tokens=60)
    calls: list[int] = []
    wavs = batch.generate(
        loaded, items_for(loaded, ["x", "ab", "Hi."]), on_ready=lambda row, wav: calls.append(row)
    )
    assert calls == [] and all(len(w) for w in wavs)
