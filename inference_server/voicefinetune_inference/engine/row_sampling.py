"""Choosing codes for rows that each have their own sampling settings and seed, on the device, without host syncs.

The semantics are `sampling`'s (upstream's processors: repetition penalty, EOS blocked below the minimum, suppressed
ids; then temperature, top-k, top-p), but every setting is a per-row tensor. A sampled row draws with the
Gumbel-max trick from noise that is a hash of (its seed, its draw counter, the id): a row's draws depend on nothing
but its own seed and logits, so they are the same whichever rows run beside it, join or leave. Greedy rows take the
argmax of the restricted logits, as `sampling.choose` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_MASK32 = 0xFFFFFFFF
# Multipliers below 2**31 keep every product of a 32-bit value inside int64 (no overflow to rely on).
_MULTIPLIERS = (0x7FEB352D, 0x2C1B3C6D, 0x297A2D39)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply rounds) on non-negative int64 values below 2**32."""
    for multiplier in _MULTIPLIERS:
        x = x ^ (x >> 16)
        x = (x * multiplier) & _MASK32
    return x ^ (x >> 15)


def seed_keys(seeds: torch.Tensor) -> torch.Tensor:
    """Each row's hashed seed (int64 [B] from int64 seeds): the part of its noise the seed alone decides, made once
    when the row joins."""
    low, high = seeds & _MASK32, (seeds >> 32) & _MASK32
    return _mix(low ^ _mix(high))


def column_keys(width: int, device: torch.device) -> torch.Tensor:
    """Each id's hashed column [width]: the part of the noise the id alone decides, made once per vocabulary."""
    return _mix(torch.arange(width, device=device) + 0x9E3779B9 & _MASK32)


def draw_keys(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """The hash of each draw (int64, ``counters``' shape): its row's `seed_keys` (broadcast) with its counter. One
    call can make a frame's draws for every code predictor step at once ([B, steps])."""
    return _mix(keys ^ (counters & _MASK32))


def uniform(draws: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """[B, width] float64 in (0, 1): a fixed function of each row's draw (`draw_keys`: seed and counter) and the
    column (`column_keys`)."""
    bits = _mix(draws[:, None] ^ columns[None, :])
    return (bits.double() + 0.5) / 2.0**32


@dataclass
class RowSettings:
    """Per-row settings as device tensors [slots]: rows are written when they join, read by every step."""

    do_sample: torch.Tensor  # bool
    top_k: torch.Tensor  # long, 0: off
    top_p: torch.Tensor  # float
    temperature: torch.Tensor  # float

    @classmethod
    def empty(cls, slots: int, device: torch.device) -> RowSettings:
        return cls(
            do_sample=torch.zeros(slots, dtype=torch.bool, device=device),
            top_k=torch.zeros(slots, dtype=torch.long, device=device),
            top_p=torch.ones(slots, device=device),
            temperature=torch.ones(slots, device=device),
        )

    def set(self, slot: int, *, do_sample: bool, top_k: int, top_p: float, temperature: float) -> None:
        self.do_sample[slot] = do_sample
        self.top_k[slot] = top_k
        self.top_p[slot] = top_p
        self.temperature[slot] = temperature

    def rows(self, bucket: int) -> RowSettings:
        return RowSettings(
            self.do_sample[:bucket], self.top_k[:bucket], self.top_p[:bucket], self.temperature[:bucket]
        )


def restrict_rows(
    logits: torch.Tensor,
    *,
    seen: torch.Tensor,
    penalty: torch.Tensor,
    suppressed: torch.Tensor,
    eos: torch.Tensor,
    block_eos: torch.Tensor,
) -> torch.Tensor:
    """Repetition penalty over ids each row has ``seen`` [B, V] (``penalty`` [B]; 1 leaves a row as it is), EOS
    blocked where ``block_eos`` [B], ``suppressed`` [B, V] ids set to -inf."""
    factor = penalty[:, None]
    logits = torch.where(seen, torch.where(logits < 0, logits * factor, logits / factor), logits)
    eos_column = eos[:, None]
    blocked = torch.where(block_eos[:, None], -float("inf"), logits.gather(1, eos_column))
    logits = logits.scatter(1, eos_column, blocked)
    return logits.masked_fill(suppressed, -float("inf"))


def warp_rows(logits: torch.Tensor, settings: RowSettings) -> torch.Tensor:
    """Temperature, then top-k (0: all ids), then top-p, each row with its own values."""
    logits = logits / settings.temperature[:, None]
    vocab = logits.shape[-1]
    k = torch.where(settings.top_k > 0, settings.top_k.clamp(max=vocab), vocab)
    descending = torch.sort(logits, dim=-1, descending=True).values
    kth = descending.gather(1, (k - 1)[:, None])
    logits = logits.masked_fill(logits < kth, -float("inf"))
    ascending, order = torch.sort(logits, descending=False)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= (1 - settings.top_p[:, None])
    drop[..., -1:] = False
    return logits.masked_fill(drop.scatter(1, order, drop), -float("inf"))


def choose_rows(
    logits: torch.Tensor, settings: RowSettings, draws: torch.Tensor, columns: torch.Tensor
) -> torch.Tensor:
    """[B] ids from restricted logits [B, V]: each row's argmax, or its draw from its warped distribution (Gumbel
    noise from each row's `draw_keys` and the vocabulary's `column_keys`)."""
    greedy = torch.argmax(logits, dim=-1)
    log_exponential = torch.log(-torch.log(uniform(draws, columns)))  # the Gumbel noise, negated
    drawn = torch.argmax(warp_rows(logits, settings).double() - log_exponential, dim=-1)
    return torch.where(settings.do_sample, drawn, greedy)
