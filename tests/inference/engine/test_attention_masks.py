"""The masks the fast engine hands each attention kernel in a fused batch of different prompt lengths.

flash-attn needs CUDA, so the flash path is exercised through transformers' own attention registry: the test
registers, under ``flash_attention_2``, a varlen attention in plain torch fed by transformers' own unpadding
(`_upad_input`, what its flash function does with the mask before the kernel). The codes must equal the SDPA run's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from transformers.modeling_flash_attention_utils import _pad_input, _unpad_input, _upad_input
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface
from voicefinetune_inference.engine import fast_engine, tts_model

from .engine_helpers import GREEDY, decoded_codes, load_tiny

TEXTS = ["Hi.", "A rather longer line of text, so that its prompt is padded differently from the short one."]
FRAMES = 12


def _varlen_reference(query, key, value, cu_q, cu_k) -> torch.Tensor:
    """What flash_attn_varlen_func computes (causal, aligned to the end of each sequence), row by row."""
    out = []
    for row in range(len(cu_q) - 1):
        q = query[cu_q[row] : cu_q[row + 1]].transpose(0, 1)  # [H, q, D]
        k = key[cu_k[row] : cu_k[row + 1]].transpose(0, 1)
        v = value[cu_k[row] : cu_k[row + 1]].transpose(0, 1)
        k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
        v = v.repeat_interleave(q.shape[0] // v.shape[0], dim=0)
        allowed = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool).tril(k.shape[1] - q.shape[1])
        out.append(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).transpose(0, 1))
    return torch.cat(out)


@contextlib.contextmanager
def flash_attention_recorded() -> Iterator[list[torch.Tensor | None]]:
    """``flash_attention_2`` answered by the plain-torch varlen attention; yields every mask it was handed."""
    masks: list[torch.Tensor | None] = []

    def flash(module, query, key, value, attention_mask, **kwargs):
        masks.append(attention_mask)
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # flash layout: [B, seq, heads, D]
        batch, length = q.shape[:2]
        if attention_mask is None:
            cu_q = torch.arange(batch + 1) * length
            cu_k = torch.arange(batch + 1) * k.shape[1]
            out = _varlen_reference(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu_q, cu_k)
            return out.view(batch, length, *out.shape[1:]), None
        q, k, v, indices_q, (cu_q, cu_k), _ = _upad_input(q, k, v, attention_mask, length, _unpad_input)
        return _pad_input(_varlen_reference(q, k, v, cu_q, cu_k), indices_q, batch, length), None

    previous = ALL_ATTENTION_FUNCTIONS["flash_attention_2"]
    AttentionInterface.register("flash_attention_2", flash)
    try:
        yield masks
    finally:
        AttentionInterface.register("flash_attention_2", previous)


@pytest.fixture
def loaded(tiny_models):
    return load_tiny(tiny_models, "custom_voice")


def fused_codes(loaded: tts_model.LoadedModel, implementation: str) -> list[torch.Tensor]:
    loaded.tts.model.talker.config._attn_implementation = implementation  # the predictor's config follows
    items = [tts_model.SpeechItem(t, "english", speaker="tiny_speaker") for t in TEXTS]
    with decoded_codes(loaded) as codes, fast_engine.engine_for(loaded.tts.model, "fast"):
        tts_model.call_upstream(loaded, items, max_new_tokens=FRAMES, **GREEDY)
    return codes


def test_flash_attention_gets_a_2d_padding_mask_and_the_codes_equal_sdpa(loaded):
    want = fused_codes(loaded, "sdpa")
    with flash_attention_recorded() as masks:
        got = fused_codes(loaded, "flash_attention_2")
    assert [len(c) for c in got] == [len(c) for c in want] == [FRAMES - 1] * 2
    for row_got, row_want in zip(got, want, strict=True):
        assert torch.equal(row_got, row_want)
    layers = len(loaded.tts.model.talker.model.layers)
    padded = [m for m in masks if m is not None]  # the predictor's rows are never padded: no mask
    # upstream's prefill (transformers' own flash mask of the left-padded prompts), then one talker step per frame
    assert len(padded) == layers * FRAMES
    prompt = padded[0]
    assert prompt.shape[0] == 2 and int(prompt.sum()) < prompt.numel()
    for index, mask in enumerate(padded):
        added = index // layers  # positions after the prompt: one per step
        assert mask.shape == (2, prompt.shape[1] + added)
        assert torch.equal(mask[:, : prompt.shape[1]].bool(), prompt.bool())
        assert bool(mask[:, prompt.shape[1] :].all())


def test_eager_attention_codes_equal_sdpa(loaded):
    """Eager attention adds its mask to the scores: padding must come as a large negative number, not a boolean."""
    want = fused_codes(loaded, "sdpa")
    got = fused_codes(loaded, "eager")
    assert [len(c) for c in got] == [len(c) for c in want] == [FRAMES - 1] * 2
    for row_got, row_want in zip(got, want, strict=True):
        assert torch.equal(row_got, row_want)
