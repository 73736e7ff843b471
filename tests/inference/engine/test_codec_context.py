"""The streamed codec's left context on a decoder with the released layer count, and decoding beside the loop.

The decoder here has the released decoder's 8 transformer layers and 72-frame sliding window (the tiny checkpoints'
has 1 layer) and its kernels, with every layer's residual at full strength (layer scale 1) so that the transformer
reaches as far back as it can; narrow widths and 8 samples per frame (upsample rates 2, 1, 1, 1) keep it fast on CPU.
The released shape itself is measured by bench/codec_context.py.
"""

from __future__ import annotations

import copy
import cProfile
import pstats
import threading

import numpy as np
import pytest
import torch
from voicefinetune_inference.engine import codec_mask, codec_stream

from voicefinetune.devtools.random_codec import random_decoder

NARROW = {
    "hidden_size": 32,
    "head_dim": 16,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "latent_dim": 32,
    "codebook_dim": 16,
    "decoder_dim": 32,
    "upsample_rates": [2, 1, 1, 1],
}
SAMPLES = 8  # per frame


@pytest.fixture(scope="module")
def eight_layers():
    decoder = random_decoder(seed=3, layer_scale=1.0, **NARROW)
    assert len(decoder.pre_transformer.layers) == 8 and decoder.config.sliding_window == 72
    return decoder


def codes_of(frames: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 2048, (frames, 16), generator=torch.Generator().manual_seed(seed))


def test_a_chunk_with_the_derived_contexts_equals_the_full_decode(eight_layers):
    """8 frames after 2 + (2 + 8 x 71) + conv context others: their chunk is decoded from a window that starts at
    frame 2."""
    assert codec_stream.frame_context(eight_layers) == 2 + 8 * 71
    codes = codes_of(2 + 2 + 8 * 71 + codec_stream.conv_context(eight_layers) + 8, seed=4)
    stream = codec_stream.IncrementalDecoder(
        eight_layers, prefix=codes[:-8], schedule=(8,)
    )  # frames already done
    (chunk,) = stream.push(codes[-8:])
    full = codec_stream.full_decode(eight_layers, codes)
    assert chunk.shape == (8 * SAMPLES,) and full.shape == (len(codes) * SAMPLES,)
    assert float(full.std()) > 0.05  # audio, not silence
    np.testing.assert_allclose(chunk, full[-8 * SAMPLES :], rtol=0, atol=1e-4)


def test_the_worker_decodes_beside_the_pushing_thread_in_order():
    """`push` returns while the worker waits; the chunks are the synchronous decoder's, in the same order."""
    decoder = random_decoder(seed=5, num_hidden_layers=1, **NARROW)
    codes = codes_of(21, seed=6)
    sync = codec_stream.IncrementalDecoder(decoder)
    want = [c for start in range(len(codes)) for c in sync.push(codes[start : start + 1])]
    tail = sync.flush()
    want += [] if tail is None else [tail]
    released = threading.Event()
    got: list[np.ndarray] = []
    threads: set[int] = set()

    def emit(chunk: np.ndarray) -> None:
        assert released.wait(timeout=30), "push waited for the decode"
        threads.add(threading.get_ident())
        got.append(chunk)

    worker = codec_stream.DecodeWorker(codec_stream.IncrementalDecoder(decoder), emit)
    frame = torch.empty(1, 16, dtype=torch.long)
    for start in range(len(codes)):
        frame.copy_(codes[start : start + 1])  # one buffer, rewritten each frame, as a graph-ready loop does
        worker.push(frame)
    released.set()
    worker.finish()
    assert threading.get_ident() not in threads and len(threads) == 1
    assert [len(c) // SAMPLES for c in got] == [1, 2, 4, 8, 6]
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_failed_decode_is_raised_by_finish_and_nothing_follows_it():
    decoder = random_decoder(seed=5, num_hidden_layers=1, **NARROW)
    got: list[np.ndarray] = []
    worker = codec_stream.DecodeWorker(codec_stream.IncrementalDecoder(decoder), got.append)
    worker.push(torch.zeros(1, 16, dtype=torch.long))
    worker.push(torch.zeros(1, 15, dtype=torch.long))  # not a frame of 16 codebooks
    worker.push(torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(RuntimeError):
        worker.finish()
    assert [len(c) for c in got] == [SAMPLES]


def test_a_stream_decodes_on_its_codec_thread(tiny_models):
    """The generation loop hands frames over; every chunk is decoded and emitted on the stream's codec thread."""
    from voicefinetune_inference.engine import stream, tts_model

    from .engine_helpers import GREEDY, load_tiny

    loaded = load_tiny(tiny_models, "voice_design")
    loaded.tts.generate_defaults.update(GREEDY, max_new_tokens=12)
    names: list[str] = []
    item = tts_model.SpeechItem("A short line.", "english", instruct="A calm voice.")
    stats = stream.synthesize_stream(
        loaded, item, emit=lambda chunk: names.append(threading.current_thread().name)
    )
    assert stats.chunks == len(names) > 1
    assert all(name.startswith("vft-codec") for name in names)


def upstream_and_plain(decoder, decode):
    """``decode()`` with transformers' masks, then with `codec_mask`'s (the decoder keeps the state it came in)."""
    was = codec_mask.installed(decoder)
    try:
        codec_mask.uninstall(decoder)
        upstream = decode()
        codec_mask.install(decoder)
        assert codec_mask.installed(decoder)
        return upstream, decode()
    finally:
        (codec_mask.install if was else codec_mask.uninstall)(decoder)


@pytest.mark.parametrize("frames", [1, 40, 71, 72, 73, 160])
def test_plain_masks_equal_transformers_masks(eight_layers, frames):
    """What upstream's transformer asks masking_utils for on a decode (positions, no cache), for two rows."""
    from transformers.masking_utils import create_sliding_window_causal_mask

    config = eight_layers.pre_transformer.config
    embeds = torch.zeros(2, frames, config.hidden_size)
    positions = torch.arange(frames)
    want = create_sliding_window_causal_mask(
        config, embeds, None, positions, None, position_ids=positions[None]
    )
    got = codec_mask.masks(config, 2, frames, embeds.device)
    assert list(got) == ["sliding_attention"]
    assert got["sliding_attention"].dtype == want.dtype == torch.bool
    assert torch.equal(got["sliding_attention"], want)


@pytest.mark.parametrize("frames", [1, 72, 160])
def test_a_full_attention_layer_gets_transformers_causal_mask(eight_layers, frames):
    """The released decoder's layers all slide; a config with full-attention layers gets masking_utils' causal
    mask for those (and still the sliding one for the others)."""
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    config = copy.deepcopy(eight_layers.pre_transformer.config)
    # the decoder's config derives layer_types (all sliding) in a read-only property
    config.__class__ = type(
        "MixedLayers", (type(config),), {"layer_types": ["full_attention", "sliding_attention"] * 4}
    )
    embeds = torch.zeros(3, frames, config.hidden_size)
    positions = torch.arange(frames)
    arguments = (config, embeds, None, positions, None)
    want = {
        "full_attention": create_causal_mask(*arguments, position_ids=positions[None]),
        "sliding_attention": create_sliding_window_causal_mask(*arguments, position_ids=positions[None]),
    }
    got = codec_mask.masks(config, 3, frames, embeds.device)
    assert sorted(got) == sorted(want)
    for layer_type, mask in want.items():
        assert torch.equal(got[layer_type], mask), layer_type
    if frames > 72:
        assert not torch.equal(got["full_attention"], got["sliding_attention"])


@pytest.mark.parametrize("frames", [40, 160])  # below and above the 72-frame window
def test_the_eight_layer_decoder_decodes_the_same_samples_with_plain_masks(eight_layers, frames):
    codes = codes_of(frames, seed=frames).T.unsqueeze(0)
    with torch.inference_mode():
        upstream, plain = upstream_and_plain(eight_layers, lambda: eight_layers(codes))
    assert upstream.shape == (1, 1, frames * SAMPLES) and float(upstream.std()) > 0.05
    assert torch.equal(plain, upstream)


def test_a_loaded_model_decodes_with_plain_masks_and_the_same_samples(tiny_models):
    """The speech tokenizer a loaded model decodes with (buffered: upstream's decode of two utterances below and
    above the window; streamed: `IncrementalDecoder`'s chunks) gives transformers' masks' samples."""
    from .engine_helpers import load_tiny

    loaded = load_tiny(tiny_models, "voice_design")
    tokenizer = loaded.tts.model.speech_tokenizer
    decoder = tokenizer.model.decoder
    assert codec_mask.installed(decoder) and decoder.config.sliding_window == 72
    short, long = (
        torch.randint(
            0, decoder.config.codebook_size, (frames, 16), generator=torch.Generator().manual_seed(frames)
        )
        for frames in (30, 150)
    )

    def buffered():
        wavs, _ = tokenizer.decode([{"audio_codes": short}, {"audio_codes": long}])
        return wavs

    def streamed():
        stream = codec_stream.IncrementalDecoder(decoder, prefix=long[:100], schedule=(8,))
        return stream.push(long[100:])

    for decode in (buffered, streamed):
        upstream, plain = upstream_and_plain(decoder, decode)
        assert len(upstream) == len(plain) > 1
        for a, b in zip(upstream, plain, strict=True):
            assert a.size > 0 and float(np.abs(a).max()) > 0
            np.testing.assert_array_equal(b, a)


def test_with_plain_masks_the_decoder_never_asks_masking_utils(eight_layers):
    """The cost this avoids: upstream's forward builds its masks with masking_utils' vmap; the hooked one does not."""
    codes = codes_of(80, seed=9).T.unsqueeze(0)

    def functions_called():
        profile = cProfile.Profile()
        with torch.inference_mode():
            profile.runcall(eight_layers, codes)
        return {name for _, _, name in pstats.Stats(profile).stats}

    upstream, plain = upstream_and_plain(eight_layers, functions_called)
    masking = {"create_causal_mask", "create_sliding_window_causal_mask", "_vmap_for_bhqkv"}
    assert masking <= upstream
    assert not masking & plain and "masks" in plain


def test_a_decoder_whose_config_asks_for_a_cache_keeps_transformers_masks(eight_layers):
    """With a cache masking_utils may hand SDPA no mask (``is_causal``): then plain masks could round differently."""
    codes = codes_of(40, seed=10).T.unsqueeze(0)
    config = eight_layers.pre_transformer.config
    profile = cProfile.Profile()
    codec_mask.install(eight_layers)
    config.use_cache = True
    try:
        with torch.inference_mode():
            profile.runcall(eight_layers, codes)
    finally:
        del config.use_cache
        codec_mask.uninstall(eight_layers)
    called = {name for _, _, name in pstats.Stats(profile).stats}
    assert "create_sliding_window_causal_mask" in called and "masks" not in called
