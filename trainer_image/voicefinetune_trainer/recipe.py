"""Training recipes: how the 1.7B fine-tune spends GPU memory. `compact` is the default; `seed` is the original
configuration, kept selectable (`VFT_TRAIN_RECIPE=seed`) and as the benchmark's baseline; `lora` is the recipe of
every ``method: lora`` job (whatever VFT_TRAIN_RECIPE says).

| | compact | seed | lora |
|---|---|---|---|
| what trains | all but the text embedding (311 M of 1.92 B at 1.7B) | everything | the adapters only |
| weights on CUDA | bf16 + int16 extension (fp32-precise, see `optim`) | fp32 under bf16 autocast | frozen bf16 (fp16 without bf16); adapters fp32 |
| weights on CPU | fp32 | fp32 | fp32 |
| AdamW moments | bf16 (`CompactAdamW`) | fp32 (torch AdamW, foreach) | fp32 (adapters only) |
| gradient checkpointing (decoder layers) | on CUDA | off | on CUDA |
| bytes per trained parameter on CUDA | 2 + 2 + 2 grad + 4 moments = 10 | 4 + 4 grad + 8 moments (+ 2 autocast copy) | 4 + 4 + 8 (frozen: 2) |
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_RECIPE = "compact"
LORA_RECIPE = "lora"


@dataclass(frozen=True)
class Recipe:
    name: str
    freeze_text_embedding: bool
    bf16_weights_on_cuda: bool
    state_dtype: torch.dtype | None  # None: torch.optim.AdamW (fp32 moments)
    # recompute each decoder layer in backward (on CUDA; on CPU it would only cost time): the activations of
    # batch 2 × 30 s clips at 1.7B drop from ≈ 7.8 GiB to ≈ 1.4
    gradient_checkpointing: bool
    # frozen half-precision weights may be fp16 on a card without bf16 (trained weights could not: fp16 rounds)
    fp16_without_bf16: bool = False
    adapters_only: bool = False  # LoRA: only the (fp32) adapters train

    def weights_dtype(self, device_type: str) -> torch.dtype:
        if not (self.bf16_weights_on_cuda and device_type == "cuda"):
            return torch.float32
        if self.fp16_without_bf16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16

    def checkpointing(self, device_type: str) -> bool:
        return self.gradient_checkpointing and device_type == "cuda"

    def autocast_dtype(self, device_type: str) -> torch.dtype | None:
        """bf16 autocast for fp32 weights on CUDA; bf16 weights already compute in bf16, CPU stays fp32."""
        if device_type != "cuda" or self.weights_dtype(device_type) != torch.float32:
            return None
        return torch.bfloat16


RECIPES: dict[str, Recipe] = {
    "compact": Recipe(
        "compact",
        freeze_text_embedding=True,
        bf16_weights_on_cuda=True,
        state_dtype=torch.bfloat16,
        gradient_checkpointing=True,
    ),
    "seed": Recipe(
        "seed",
        freeze_text_embedding=False,
        bf16_weights_on_cuda=False,
        state_dtype=None,
        gradient_checkpointing=False,
    ),
    LORA_RECIPE: Recipe(
        LORA_RECIPE,
        freeze_text_embedding=True,
        bf16_weights_on_cuda=True,
        state_dtype=None,
        gradient_checkpointing=True,
        fp16_without_bf16=True,
        adapters_only=True,
    ),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(
            f"unknown training recipe {name!r} (VFT_TRAIN_RECIPE): use one of {sorted(RECIPES)}"
        ) from None
