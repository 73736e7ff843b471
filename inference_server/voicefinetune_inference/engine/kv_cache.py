"""A preallocated (static) key/value cache that upstream's attention layers write into.

The layers call ``cache.update(key, value, layer_idx, cache_kwargs)`` and attend over what it returns; this one
writes at ``position`` into buffers sized once per call and returns views of the filled part, so a decode step
allocates nothing and attends over exactly the tensors a growing cache would hold (same shapes, same numbers).
"""

from __future__ import annotations

from typing import Any

import torch


def layer_buffers(
    attention: Any, *, layers: int, rows: int, positions: int, like: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Zeroed key and value buffers [rows, key heads, positions, D], one pair per layer, sized from one of the
    model's attention modules (``k_proj`` and ``head_dim``) in ``like``'s dtype and device."""
    shape = (rows, attention.k_proj.out_features // attention.head_dim, positions, attention.head_dim)

    def zeros() -> list[torch.Tensor]:
        return [torch.zeros(shape, dtype=like.dtype, device=like.device) for _ in range(layers)]

    return zeros(), zeros()


class StaticKV:
    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.keys, self.values = keys, values
        self.capacity = keys[0].shape[2]
        self.position = 0  # where the next update writes; the caller moves it once per forward

    @classmethod
    def for_layers(
        cls, attention: Any, *, layers: int, batch: int, capacity: int, like: torch.Tensor
    ) -> StaticKV:
        return cls(*layer_buffers(attention, layers=layers, rows=batch, positions=capacity, like=like))

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, cache_kwargs: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.position + key.shape[2]
        if end > self.capacity:
            raise RuntimeError(f"static cache of {self.capacity} positions is full")
        self.keys[layer_idx][:, :, self.position : end] = key
        self.values[layer_idx][:, :, self.position : end] = value
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def fill_from(self, cache: Any) -> None:
        """Copy a prefilled Hugging Face cache (one ``keys``/``values`` pair per layer) into the buffers."""
        for index, layer in enumerate(cache.layers):
            length = layer.keys.shape[2]
            self.keys[index][:, :, :length] = layer.keys
            self.values[index][:, :, :length] = layer.values
            self.position = length

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (finished rows stop costing work)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
