"""One optimizer step: which parameters train, the AdamW optimizer, and forward + backward + clip + update."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .batching import Batch
from .loss import LossParts, sft_loss


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    """Everything but the speaker encoder (frozen: it only fills the speaker slot and is not exported)."""
    return [p for name, p in model.named_parameters() if not name.startswith("speaker_encoder.")]


def train_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    *,
    batch: Batch,
    parameters: Sequence[torch.nn.Parameter],
    grad_clip: float,
    autocast_dtype: torch.dtype | None,
) -> LossParts:
    optimizer.zero_grad(set_to_none=True)
    device_type = batch.text_ids.device.type
    with torch.autocast(
        device_type=device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
    ):
        parts = sft_loss(model, batch)
    parts.total.backward()
    torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
    return parts


def make_optimizer(
    parameters: Sequence[torch.nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
