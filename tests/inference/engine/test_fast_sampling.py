"""The engine's sampling functions against the Hugging Face logits processors upstream's `generate()` uses."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from voicefinetune_inference.engine.sampling import (
    SamplingParams,
    choose,
    restrict,
    suppression_mask,
    warp,
)

VOCAB = 96
EOS = 70
SUPPRESSED = [i for i in range(64, VOCAB) if i != EOS]


def fixed_logits(seed: int, rows: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, VOCAB, generator=generator) * 3


def upstream_processors(
    history_length: int, *, penalty: float, params: SamplingParams
) -> LogitsProcessorList:
    """The list `generate()` builds for upstream's talker settings, in its order (prompt length 0: inputs_embeds)."""
    processors = LogitsProcessorList(
        [
            RepetitionPenaltyLogitsProcessor(penalty=penalty),
            MinNewTokensLengthLogitsProcessor(0, 2, torch.tensor([EOS])),
            SuppressTokensLogitsProcessor(SUPPRESSED),
        ]
    )
    if params.do_sample:
        if params.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            processors.append(TopKLogitsWarper(top_k=params.top_k))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=params.top_p))
    return processors


@pytest.mark.parametrize("history_length", [0, 1, 5])
@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(do_sample=False),
        SamplingParams(top_k=50, top_p=1.0, temperature=0.9),
        SamplingParams(top_k=10, top_p=0.8, temperature=0.7),
        SamplingParams(top_k=0, top_p=0.5, temperature=1.0),
    ],
)
def test_processed_logits_equal_upstreams(history_length, params):
    logits = fixed_logits(history_length)
    history = torch.randint(0, 64, (3, history_length), generator=torch.Generator().manual_seed(5))
    want = upstream_processors(history_length, penalty=1.05, params=params)(history, logits.clone())
    mask = suppression_mask(VOCAB, SUPPRESSED, "cpu")
    got = restrict(
        logits.clone(),
        history=history,
        repetition_penalty=1.05,
        suppressed=mask,
        eos_id=EOS,
        block_eos=history_length < 2,
    )
    if params.do_sample:
        got = warp(got, params)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    assert torch.equal(got, want)


def test_eos_is_blocked_only_below_the_minimum():
    logits = torch.zeros(1, VOCAB)
    logits[0, EOS] = 10.0
    assert int(choose(restrict(logits, eos_id=EOS, block_eos=True), SamplingParams(do_sample=False))) != EOS
    assert int(choose(restrict(logits, eos_id=EOS, block_eos=False), SamplingParams(do_sample=False))) == EOS


def test_suppressed_ids_are_never_chosen_but_eos_is():
    logits = torch.full((4, VOCAB), -5.0)
    logits[:, 64:] = 5.0
    mask = suppression_mask(VOCAB, SUPPRESSED, "cpu")
    picks = choose(restrict(logits, suppressed=mask), SamplingParams(top_k=50, temperature=0.9))
    assert picks.tolist() == [EOS] * 4


def test_draws_equal_upstreams_softmax_multinomial():
    """Same generator state, same processed scores: the same ids as `generate()`'s `multinomial(softmax(scores))`."""
    params = SamplingParams(top_k=20, top_p=0.9, temperature=0.8)
    logits = fixed_logits(11, rows=6)
    want_scores = upstream_processors(3, penalty=1.0, params=params)(
        torch.zeros(6, 3, dtype=torch.long), logits.clone()
    )
    want = torch.multinomial(
        torch.softmax(want_scores, dim=-1), 1, generator=torch.Generator().manual_seed(3)
    )
    mask = suppression_mask(VOCAB, SUPPRESSED, "cpu")
    got = choose(restrict(logits.clone(), suppressed=mask), params, torch.Generator().manual_seed(3))
    assert got.tolist() == want.squeeze(1).tolist()


def test_repetition_penalty_divides_positive_and_multiplies_negative_scores():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    history = torch.tensor([[0, 1]])
    out = restrict(logits, history=history, repetition_penalty=2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0]]


def test_the_suppression_mask_is_made_on_the_models_device():
    # the meta device stands in for a GPU: a mask left on the CPU would cost a copy in every step
    mask = suppression_mask(VOCAB, SUPPRESSED, "meta")
    assert mask is not None and mask.device.type == "meta" and mask.shape == (VOCAB,)
    assert suppression_mask(VOCAB, [], "meta") is None
