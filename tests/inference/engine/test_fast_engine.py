"""The fast engine against upstream's own `generate_*` on the tiny checkpoints: greedy codes equal exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from voicefinetune_inference.engine import batch, fast_engine, tts_model

from .engine_helpers import GREEDY, clone_prompt, decoded_codes, load_tiny

SHORT = "Hi."
LONG = "A rather longer line of text, so that its prompt is padded differently from the short one."


@pytest.fixture(scope="module")
def models(tiny_models):
    return {kind: load_tiny(tiny_models, kind) for kind in ("custom_voice", "voice_design", "base")}


def items_for(loaded: tts_model.LoadedModel, texts: list[str]) -> list[tts_model.SpeechItem]:
    if loaded.kind == "custom_voice":
        return [tts_model.SpeechItem(t, "english", speaker="tiny_speaker") for t in texts]
    if loaded.kind == "voice_design":
        return [tts_model.SpeechItem(t, "english", instruct="A calm, low voice.") for t in texts]
    prompt = clone_prompt(loaded)
    return [tts_model.SpeechItem(t, "english", clone_prompt=prompt) for t in texts]


def run(loaded, items, engine: str, options=None, **kwargs):
    with decoded_codes(loaded) as codes, fast_engine.engine_for(loaded.tts.model, engine, options):
        wavs, rate = tts_model.call_upstream(loaded, items, **kwargs)
    assert rate == 24000
    return codes, wavs


@pytest.mark.parametrize("kind", ["custom_voice", "voice_design", "base"])
@pytest.mark.parametrize(
    "texts", [[LONG], [SHORT, LONG, "Medium length words here."]], ids=["single", "fused"]
)
def test_greedy_codes_equal_upstream(models, kind, texts):
    loaded = models[kind]
    items = items_for(loaded, texts)
    want_codes, want_wavs = run(loaded, items, "upstream", max_new_tokens=24, **GREEDY)
    got_codes, got_wavs = run(loaded, items, "fast", max_new_tokens=24, **GREEDY)
    assert len(got_codes) == len(want_codes) == len(texts)
    for got, want in zip(got_codes, want_codes, strict=True):
        assert got.shape == want.shape
        assert torch.equal(got, want)
    for got, want in zip(got_wavs, want_wavs, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    if kind == "base":  # the reference codes come first in what is decoded, and are trimmed off the audio
        reference = items[0].clone_prompt.ref_code
        assert torch.equal(got_codes[0][: len(reference)], reference.to(got_codes[0].device))
        assert len(got_wavs[0]) == (len(got_codes[0]) - len(reference)) * 1920


def test_rows_stop_at_their_own_bound_and_the_others_are_unchanged(models):
    """A fused batch whose first row may take only 8 codebook-0 ids: it ends after 7 frames (upstream counts the
    same way), and the other row still gets exactly upstream's codes."""
    loaded = models["custom_voice"]
    items = items_for(loaded, [SHORT, LONG])
    want, _ = run(loaded, items, "upstream", max_new_tokens=24, **GREEDY)
    got, wavs = run(
        loaded, items, "fast", fast_engine.CallOptions(frame_limits=[8, 24]), max_new_tokens=24, **GREEDY
    )
    assert [len(c) for c in want] == [23, 23]  # the tiny talker does not choose EOS greedily within 24 ids
    assert got[0].shape == (7, 16) and torch.equal(got[0], want[0][:7])
    assert torch.equal(got[1], want[1])
    assert [len(w) for w in wavs] == [7 * 1920, 23 * 1920]


def test_frame_bound_follows_the_text_length():
    assert fast_engine.frame_bound("") == fast_engine.FRAMES_BASE
    assert fast_engine.frame_bound("abcd") == fast_engine.FRAMES_BASE + 4 * fast_engine.FRAMES_PER_CHAR
    assert fast_engine.frame_bound("x" * 2000) < 8192 * 2


def test_sampled_output_is_valid(models):
    """Sampling (the checkpoint's settings) with a fixed seed: one frame per 80 ms, ids in the codebook range, no
    EOS kept, rows no longer than their bound."""
    loaded = models["custom_voice"]
    items = items_for(loaded, [SHORT, LONG])
    torch.manual_seed(1234)
    codes, wavs = run(loaded, items, "fast", max_new_tokens=20)
    codebook = loaded.tts.model.config.talker_config.code_predictor_config.vocab_size
    for row, wav in zip(codes, wavs, strict=True):
        assert 0 < len(row) <= 19
        assert row.dtype == torch.long and int(row.min()) >= 0 and int(row.max()) < codebook
        assert len(wav) == len(row) * 1920


def test_sampling_with_one_row_draws_what_upstream_draws(models):
    """Same seed, one row: the engine draws its random numbers in upstream's order, so even sampled codes match."""
    loaded = models["voice_design"]
    items = items_for(loaded, [LONG])
    torch.manual_seed(99)
    want, _ = run(loaded, items, "upstream", max_new_tokens=20)
    torch.manual_seed(99)
    got, _ = run(loaded, items, "fast", max_new_tokens=20)
    assert torch.equal(got[0], want[0])


def test_substitution_is_undone_and_upstream_stays_selectable(models):
    loaded = models["custom_voice"]
    talker = loaded.tts.model.talker
    with fast_engine.engine_for(loaded.tts.model, "fast"):
        assert "generate" in vars(talker)
    assert "generate" not in vars(talker)
    with fast_engine.engine_for(loaded.tts.model, "upstream"):
        assert "generate" not in vars(talker)


def test_generate_uses_the_engine_it_was_loaded_with(tiny_models):
    """`batch.generate` (the server's call) gives the same waveforms through either engine under greedy
    settings; the checkpoint's sampling settings are the server's, so greedy is set here on the defaults."""
    fast = load_tiny(tiny_models, "custom_voice", engine="fast")
    upstream = load_tiny(tiny_models, "custom_voice", engine="upstream")
    for loaded in (fast, upstream):
        loaded.tts.generate_defaults.update(GREEDY, max_new_tokens=20)
    item = tts_model.SpeechItem(LONG, "english", speaker="tiny_speaker")
    (got,) = batch.generate(fast, [item])
    (want,) = batch.generate(upstream, [item])
    assert fast.engine == "fast" and upstream.engine == "upstream"
    assert got.shape == want.shape == (19 * 1920,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_the_server_call_bounds_each_row_by_its_text(tiny_models):
    """With a generous max_new_tokens, a one-character text still stops at its own bound (60 + 6 ids: 65 frames)."""
    loaded = load_tiny(tiny_models, "custom_voice")
    loaded.tts.generate_defaults.update(GREEDY, max_new_tokens=500)
    (wav,) = batch.generate(loaded, [tts_model.SpeechItem("x", "english", speaker="tiny_speaker")])
    assert len(wav) == (fast_engine.frame_bound("x") - 1) * 1920 == 65 * 1920


def test_fused_rows_ending_at_their_own_eos_equal_upstream(models):
    """The tiny voice-design talker greedily chooses EOS early for some texts: rows of one fused batch end at
    different frames, each exactly where upstream's row ends."""
    loaded = models["voice_design"]
    items = items_for(loaded, ["x", "ab", "Hi."])
    want, want_wavs = run(loaded, items, "upstream", max_new_tokens=60, **GREEDY)
    got, got_wavs = run(loaded, items, "fast", max_new_tokens=60, **GREEDY)
    lengths = [len(c) for c in want]
    assert len(set(lengths)) == 3 and max(lengths) < 59  # three different lengths, all ended by EOS
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)
    assert [len(w) for w in got_wavs] == [n * 1920 for n in lengths]
