"""One optimizer step: which parameters train, the optimizer of a recipe, and forward + backward (over one or more
accumulated batches) + clip + update."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from voicefinetune_trainer.batching import Batch
from voicefinetune_trainer.loss import LossParts, sft_loss
from voicefinetune_trainer.optim import CompactAdamW

TEXT_EMBEDDING_PREFIX = "talker.model.text_embedding."


def trainable_parameters(model: Any, *, freeze_text_embedding: bool = False) -> list[torch.nn.Parameter]:
    """Everything but the speaker encoder (frozen: it only fills the speaker slot and is not exported) and, when
    asked, the text embedding (151,936 rows at 1.7B, of which a dataset uses a few thousand; the text projection
    after it still trains)."""
    chosen = []
    for name, parameter in model.named_parameters():
        frozen = name.startswith("speaker_encoder.") or (
            freeze_text_embedding and name.startswith(TEXT_EMBEDDING_PREFIX)
        )
        parameter.requires_grad_(not frozen)
        if not frozen:
            chosen.append(parameter)
    return chosen


def train_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    *,
    batch: Batch | Sequence[Batch],
    parameters: Sequence[torch.nn.Parameter],
    grad_clip: float,
    autocast_dtype: torch.dtype | None,
) -> LossParts:
    """One optimizer step over `batch`, or over several batches whose gradients add up (gradient accumulation;
    each contributes its mean loss / their count). Returns the loss parts averaged over the batches."""
    batches = [batch] if isinstance(batch, Batch) else list(batch)
    optimizer.zero_grad(set_to_none=True)
    device_type = batches[0].text_ids.device.type
    totals = []
    for one in batches:
        with torch.autocast(
            device_type=device_type,
            dtype=autocast_dtype or torch.bfloat16,
            enabled=autocast_dtype is not None,
        ):
            parts = sft_loss(model, one)
        (parts.total / len(batches)).backward()
        totals.append(LossParts(parts.total.detach(), parts.talker.detach(), parts.sub_talker.detach()))
    torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
    if len(totals) == 1:
        return totals[0]
    return LossParts(
        *(torch.stack([getattr(t, k) for t in totals]).mean() for k in ("total", "talker", "sub_talker"))
    )


def make_optimizer(
    parameters: Sequence[torch.nn.Parameter],
    lr: float,
    weight_decay: float,
    state_dtype: torch.dtype | None = None,
) -> torch.optim.Optimizer:
    """torch's AdamW (the seed's: fp32 moments) without `state_dtype`, else CompactAdamW with moments in it."""
    if state_dtype is None:
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    return CompactAdamW(parameters, lr=lr, weight_decay=weight_decay, state_dtype=state_dtype)
