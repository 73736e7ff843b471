"""The batch schedule: samples split into fixed batches once, and each epoch's seeded order of those batches."""

from __future__ import annotations

import torch


def _permutation(count: int, seed: int, salt: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + salt)
    return torch.randperm(count, generator=generator).tolist()


def fixed_batches(count: int, batch_size: int, seed: int) -> list[list[int]]:
    """The samples split into batches once (seeded shuffle): every epoch trains on the same batches, so per-epoch
    mean losses compare the same data."""
    order = _permutation(count, seed, -1)
    return [order[start : start + batch_size] for start in range(0, count, batch_size)]


def batch_order(batches: int, *, seed: int, epoch: int, first_epoch: int, last_epoch: int) -> list[int]:
    """Batch indices of one epoch, shuffled by (seed, epoch). The run's last epoch ends with the batch its first
    epoch began with, so the first and the last reported loss are measured on the same clips: with a few short
    clips the loss differs more between batches than one short run lowers it."""
    order = _permutation(batches, seed, epoch)
    if epoch == last_epoch and first_epoch != last_epoch:
        opening = _permutation(batches, seed, first_epoch)[0]
        order.remove(opening)
        order.append(opening)
    return order
