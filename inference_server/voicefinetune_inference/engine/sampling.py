"""Choosing the next code from logits with upstream's semantics, without Hugging Face's logits-processor objects.

Upstream runs Hugging Face `generate()`, whose processors act in this order: repetition penalty over the tokens
generated so far, EOS suppressed below the minimum of new tokens, suppressed ids set to -inf; then, when sampling,
temperature, top-k, top-p and a multinomial draw; greedy decoding takes the argmax of the processed logits.
`tests/inference/test_fast_sampling.py` checks these functions against those processors on fixed logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool = True
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 1.0


def penalize_repetition(logits: torch.Tensor, history: torch.Tensor | None, penalty: float) -> torch.Tensor:
    """Every id in a row's ``history`` [B, T]: negative logits times ``penalty``, others divided by it."""
    if history is None or history.shape[-1] == 0 or penalty == 1.0:
        return logits
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, history, True)
    return torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)


def suppression_mask(
    vocab_size: int, ids: list[int] | None, device: torch.device | str
) -> torch.Tensor | None:
    """A [vocab] bool mask of the ids never to produce (computed once per call, not per step)."""
    if not ids:
        return None
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    mask[torch.tensor(ids, dtype=torch.long, device=device)] = True
    return mask


def restrict(
    logits: torch.Tensor,
    *,
    history: torch.Tensor | None = None,
    repetition_penalty: float = 1.0,
    suppressed: torch.Tensor | None = None,
    eos_id: int | None = None,
    block_eos: bool = False,
) -> torch.Tensor:
    """The processors that apply to greedy and sampled decoding alike (penalty, minimum length, suppression)."""
    logits = penalize_repetition(logits, history, repetition_penalty)
    if block_eos and eos_id is not None:
        logits = logits.clone()
        logits[:, eos_id] = -float("inf")
    if suppressed is not None:
        logits = logits.masked_fill(suppressed, -float("inf"))
    return logits


def warp(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus, keeping at least one id), as scores for a softmax."""
    if params.temperature is not None and params.temperature != 1.0:
        logits = logits / params.temperature
    if params.top_k:
        k = min(max(int(params.top_k), 1), logits.shape[-1])
        kth = torch.topk(logits, k).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    if params.top_p is not None and params.top_p < 1.0:
        ascending, order = torch.sort(logits, descending=False)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1 - params.top_p)
        drop[..., -1:] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), -float("inf"))
    return logits


def choose(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[B] next ids from already restricted logits [B, V]: argmax, or a draw from the warped distribution."""
    if not params.do_sample:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(warp(logits, params), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
