"""The streamed codec's left context on a decoder with the released layer count, and decoding beside the loop.

The decoder here has the released decoder's 8 transformer layers and 72-frame sliding window (the tiny checkpoints'
has 1 layer) and its kernels, with every layer's residual at full strength (layer scale 1) so that the transformer
reaches as far back as it can; narrow widths and 8 samples per frame (upsample rates 2, 1, 1, 1) keep it fast on CPU.
The released shape itself is measured by bench/codec_context.py.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from voicefinetune_inference.engine import codec_stream

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
