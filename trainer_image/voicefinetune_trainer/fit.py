"""Will the fine-tune fit the GPU? An estimate of one step's peak memory, checked against the free memory before
training starts, so a job that cannot fit fails at once with what to change instead of after an hour.

The estimate counts parameters, gradients and optimizer state exactly (from the model and the recipe) and the
activations from the longest batch with per-token coefficients calibrated on the 1.7B architecture
(`bench/train_memory.py` measures the real step on fake tensors and prints both figures side by side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from voicefinetune_trainer.batching import PreparedSample, sequence_length
from voicefinetune_trainer.optim import STEP_TEMPORARY_BYTES
from voicefinetune_trainer.recipe import Recipe
from voicefinetune_trainer.step import TEXT_EMBEDDING_PREFIX

GIB = 2**30
ADAPTER_MARK = ".lora_"  # PEFT's adapter parameters (lora_A, lora_B)
# Activation bytes per position and decoder layer, in units of (hidden, intermediate) sizes × the compute dtype's
# bytes: what backward keeps of a layer without checkpointing, and with it (the layer's input, plus one layer
# being recomputed).
PER_LAYER_HIDDEN, PER_LAYER_INTERMEDIATE = 16, 6
CHECKPOINTED_HIDDEN = 1
# Room left for the allocator's fragmentation and CUDA's own workspaces.
MARGIN = 1.10


class WontFit(RuntimeError):
    """The estimated peak exceeds the free GPU memory (the message says what to change)."""


@dataclass(frozen=True)
class PeakEstimate:
    parameters: int
    gradients: int
    optimizer: int
    activations: int
    temporaries: int

    @property
    def total(self) -> int:
        """Parameters and optimizer state stay; activations peak at the end of the forward, before any gradient
        exists (zero_grad frees them), gradients and the update's temporaries at the optimizer step, when the
        activations are gone."""
        return self.parameters + self.optimizer + max(self.activations, self.gradients + self.temporaries)

    def describe(self) -> str:
        parts = ", ".join(
            f"{name} {getattr(self, name) / GIB:.1f}"
            for name in ("parameters", "gradients", "optimizer", "activations", "temporaries")
        )
        return f"{self.total / GIB:.1f} GiB ({parts})"


def _decoder_activations(
    positions: int, config: Any, layers: int, dtype_bytes: int, checkpointed: bool
) -> int:
    hidden, intermediate = config.hidden_size, config.intermediate_size
    full_layer = positions * (PER_LAYER_HIDDEN * hidden + PER_LAYER_INTERMEDIATE * intermediate) * dtype_bytes
    if checkpointed:
        return positions * CHECKPOINTED_HIDDEN * hidden * dtype_bytes * layers + full_layer
    return full_layer * layers


def estimate_peak(
    model: Any, recipe: Recipe, *, device_type: str, batch_size: int, positions: int, frames: int
) -> PeakEstimate:
    """One optimizer step's peak for batches of `batch_size` sequences of `positions` talker positions holding
    `frames` codec frames each (the longest batch of the dataset)."""
    weights_bytes = recipe.weights_dtype(device_type).itemsize
    trained = largest = parameter_bytes = 0
    for name, parameter in model.named_parameters():
        adapter = ADAPTER_MARK in name  # LoRA adapters stay fp32 over half-precision weights
        parameter_bytes += parameter.numel() * (4 if adapter else weights_bytes)
        frozen = (
            name.startswith("speaker_encoder.")
            or (recipe.freeze_text_embedding and name.startswith(TEXT_EMBEDDING_PREFIX))
            or (recipe.adapters_only and not adapter)
        )
        if not frozen:
            trained += parameter.numel()
            largest = max(largest, parameter.numel())
    trained_bytes = 4 if recipe.adapters_only else weights_bytes
    if (
        recipe.state_dtype is None
    ):  # torch AdamW: fp32 moments, and foreach's temporary the size of one of them
        optimizer, temporaries = trained * 8, trained * 4
    else:  # moments, the int16 weight extension for bf16 weights, and the step's fp32 working copies of one tensor
        extension = 2 if weights_bytes == 2 else 0
        optimizer = trained * (2 * recipe.state_dtype.itemsize + extension)
        temporaries = largest * STEP_TEMPORARY_BYTES
    autocast = recipe.autocast_dtype(device_type)
    compute_bytes = autocast.itemsize if autocast is not None else weights_bytes
    talker = model.config.talker_config
    predictor = talker.code_predictor_config
    activations = _decoder_activations(
        batch_size * positions,
        talker,
        talker.num_hidden_layers,
        compute_bytes,
        recipe.checkpointing(device_type),
    ) + _decoder_activations(
        batch_size * frames * talker.num_code_groups,
        predictor,
        predictor.num_hidden_layers,
        compute_bytes,
        recipe.checkpointing(device_type),
    )
    # logits in fp32 for the losses, and their gradients
    activations += (
        3
        * 4
        * batch_size
        * (positions * talker.vocab_size + frames * talker.num_code_groups * predictor.vocab_size)
    )
    if autocast is not None:  # the cast weights that backward keeps
        activations += trained * autocast.itemsize
    return PeakEstimate(parameter_bytes, trained * trained_bytes, optimizer, activations, temporaries)


def check_fit(
    estimate: PeakEstimate,
    *,
    free_bytes: int,
    batch_size: int,
    gradient_accumulation_steps: int,
    recipe: Recipe,
) -> None:
    """Raise WontFit when the estimated peak (with a margin) exceeds `free_bytes`; the message says what to do."""
    if estimate.total * MARGIN <= free_bytes:
        return
    advice = []
    if batch_size > 1:
        smaller = max(1, batch_size // 2)
        steps = math.ceil(batch_size * gradient_accumulation_steps / smaller)
        advice.append(
            f"lower batch_size to {smaller} with gradient_accumulation_steps {steps} (same effective batch)"
        )
    if recipe.name == "seed":
        advice.append("use the compact recipe (VFT_TRAIN_RECIPE=compact)")
    if not recipe.adapters_only:
        advice.append("train a LoRA voice (method lora: about 10 GB at 1.7B, batch 2, 30 s clips)")
    advice += [
        "shorten the longest clips",
        "use a GPU with more free memory",
        "or set VFT_TRAIN_FIT_CHECK=0 to try anyway",
    ]
    raise WontFit(
        f"training will not fit in GPU memory: estimated peak {estimate.describe()} with a {MARGIN:.2f}× margin, "
        f"but only {free_bytes / GIB:.1f} GiB is free; " + "; ".join(advice)
    )


def check_training_fits(
    model: Any,
    recipe: Recipe,
    prepared: list[PreparedSample],
    *,
    batch_size: int,
    gradient_accumulation_steps: int,
    free_bytes: int,
    device_type: str = "cuda",
) -> PeakEstimate:
    """Estimate the peak of training `model` on `prepared` (its longest sample sets the batch shape) and check it
    against `free_bytes`; returns the estimate."""
    estimate = estimate_peak(
        model,
        recipe,
        device_type=device_type,
        batch_size=min(batch_size, len(prepared)),
        positions=max(sequence_length(p) for p in prepared),
        frames=max(p.codes.shape[0] for p in prepared),
    )
    check_fit(
        estimate,
        free_bytes=free_bytes,
        batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        recipe=recipe,
    )
    return estimate
