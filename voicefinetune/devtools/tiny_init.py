"""Seeded random weight initialisation shared by the tiny model builders."""

from __future__ import annotations

from typing import Any

import numpy as np


def normal_(tensor: Any, std: float, generator: Any) -> None:
    import torch

    with torch.no_grad():
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)


def fan_in_init(module: Any, generator: Any, gain: float = 1.0) -> None:
    """Re-initialise every conv/linear weight with std gain/sqrt(fan_in) (signal neither vanishes nor explodes)."""
    import torch
    from torch import nn

    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
            weight = layer.weight
            fan_in = weight.shape[1] * (weight[0, 0].numel() if weight.dim() > 2 else 1)
            if isinstance(layer, nn.ConvTranspose1d):  # weight is (in, out/groups, k)
                fan_in = weight.shape[0] * weight.shape[2] // layer.stride[0]
            normal_(weight, gain / np.sqrt(fan_in), generator)
            if layer.bias is not None:
                with torch.no_grad():
                    layer.bias.zero_()
