"""Incremental decoding and the per-utterance PCM stream on the tiny checkpoints.

The tiny decoder has one transformer layer; test_codec_context.py checks the chunks on a decoder with the released
8 layers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from voicefinetune_inference.engine import batch, codec_stream, tts_model
from voicefinetune_inference.engine import decode as fast_decode
from voicefinetune_inference.engine import stream as engine_stream

from .engine_helpers import GREEDY, clone_prompt, load_tiny

TEXT = "A line long enough to be streamed in several chunks."


@pytest.fixture(scope="module")
def design(tiny_models):
    loaded = load_tiny(tiny_models, "voice_design")
    loaded.tts.generate_defaults.update(GREEDY, max_new_tokens=40)
    return loaded


def random_codes(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 64, (frames, 16), generator=torch.Generator().manual_seed(seed))


def joined(decoder: codec_stream.IncrementalDecoder, codes: torch.Tensor, step: int = 1) -> list[np.ndarray]:
    chunks: list[np.ndarray] = []
    for start in range(0, len(codes), step):
        chunks += decoder.push(codes[start : start + step])
    tail = decoder.flush()
    return chunks + ([tail] if tail is not None else [])


@pytest.mark.parametrize(("step", "frames"), [(1, 100), (5, 23)])
def test_joined_chunks_equal_the_full_decode(design, step, frames):
    """100 frames are more than the tiny decoder's window (73 + 10 frames before a chunk), so the window slides."""
    codec = design.tts.model.speech_tokenizer.model.decoder
    codes = random_codes(frames)
    chunks = joined(codec_stream.IncrementalDecoder(codec), codes, step)
    full = codec_stream.full_decode(codec, codes)
    assert full.shape == (frames * 1920,)
    assert sum(len(c) for c in chunks) == frames * 1920
    if step == 1:
        assert [len(c) // 1920 for c in chunks[:5]] == [1, 2, 4, 8, 8]
    np.testing.assert_allclose(np.concatenate(chunks), full, rtol=1e-4, atol=1e-4)


def test_reference_codes_seed_the_context(design):
    """Voice clone: the reference codes are decoded before the new ones and never emitted, as upstream trims them."""
    codec = design.tts.model.speech_tokenizer.model.decoder
    reference, codes = random_codes(15, seed=1), random_codes(30, seed=2)
    chunks = joined(codec_stream.IncrementalDecoder(codec, prefix=reference), codes)
    full = codec_stream.full_decode(codec, torch.cat((reference, codes)))[15 * 1920 :]
    assert sum(len(c) for c in chunks) == 30 * 1920
    np.testing.assert_allclose(np.concatenate(chunks), full, rtol=1e-4, atol=1e-4)


def test_stream_equals_the_whole_utterance(design):
    chunks: list[np.ndarray] = []
    item = tts_model.SpeechItem(TEXT, "english", instruct="A bright voice.")
    stats = engine_stream.synthesize_stream(design, item, emit=chunks.append)
    (whole,) = batch.generate(design, [item])
    assert stats.frames == 39 and stats.chunks == len(chunks)
    assert [len(c) // 1920 for c in chunks] == [1, 2, 4, 8, 8, 8, 8]
    np.testing.assert_allclose(np.concatenate(chunks), whole, rtol=1e-4, atol=1e-4)
    assert not design.lock.locked()


def test_voice_clone_stream_is_trimmed_like_upstream(tiny_models):
    loaded = load_tiny(tiny_models, "base")
    loaded.tts.generate_defaults.update(GREEDY, max_new_tokens=20)
    item = tts_model.SpeechItem(TEXT, "english", clone_prompt=clone_prompt(loaded))
    chunks: list[np.ndarray] = []
    engine_stream.synthesize_stream(loaded, item, emit=chunks.append)
    (whole,) = batch.generate(loaded, [item])
    assert sum(len(c) for c in chunks) == len(whole) == 19 * 1920
    np.testing.assert_allclose(np.concatenate(chunks), whole, rtol=1e-4, atol=1e-4)


async def test_a_consumer_that_leaves_stops_generation_and_frees_the_model(design, monkeypatch):
    frames = []
    real_run = fast_decode._Predictor.run

    def counting(self, *args, **kwargs):
        frames.append(1)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(fast_decode._Predictor, "run", counting)
    design.tts.generate_defaults["max_new_tokens"] = 200
    item = tts_model.SpeechItem("x" * 40, "english", instruct="A bright voice.")
    try:
        with ThreadPoolExecutor(1) as pool:
            stream = engine_stream.stream_chunks(design, item, pool=pool)
            first = await stream.__anext__()
            await stream.aclose()
            assert len(first) == 1920
            assert not design.lock.locked()
            produced = len(frames)
            assert produced < 199  # stopped well before the row's end
            assert len(frames) == produced
    finally:
        design.tts.generate_defaults["max_new_tokens"] = 40


def test_with_the_upstream_engine_the_stream_is_one_whole_chunk(tiny_models):
    loaded = load_tiny(tiny_models, "voice_design", engine="upstream")
    loaded.tts.generate_defaults.update(GREEDY, max_new_tokens=12)
    chunks: list[np.ndarray] = []
    stats = engine_stream.synthesize_stream(loaded, tts_model.SpeechItem(TEXT, "english"), emit=chunks.append)
    assert [len(c) for c in chunks] == [11 * 1920] and stats.frames == 11 and stats.chunks == 1
