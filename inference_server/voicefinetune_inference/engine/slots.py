"""Slot caches: one key/value buffer per layer with a fixed number of slots (rows) of fixed capacity.

A request's rows take free slots when they join a running decode loop and give them back when they end; nothing is
re-allocated or copied when rows come and go. Each row keeps its own length (where its next key is written): a step
writes every row's new key and value at that row's own index (``write``, a device tensor) and attends over the
first ``span`` positions of the first ``bucket`` slots, with a mask that hides each row's unused positions.
``bucket`` and ``span`` are chosen by the host from lengths it already knows, so a step's shapes are fixed per
(bucket, span) and nothing in it waits for the device.
"""

from __future__ import annotations

from typing import Any

import torch


class SlotKV:
    def __init__(
        self,
        *,
        layers: int,
        slots: int,
        heads: int,
        capacity: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ):
        shape = (slots, heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.slots = slots
        self.capacity = capacity
        self.bucket = slots  # the step runs over slots [0, bucket)
        self.span = capacity  # and attends over positions [0, span)
        self.write = torch.zeros(slots, dtype=torch.long, device=device)  # per slot: where the next key goes
        self._rows = torch.arange(slots, device=device)

    @classmethod
    def for_layers(
        cls, attention: Any, *, layers: int, slots: int, capacity: int, like: torch.Tensor
    ) -> SlotKV:
        """Sized from one of the model's attention modules (``k_proj`` and ``head_dim``)."""
        return cls(
            layers=layers,
            slots=slots,
            heads=attention.k_proj.out_features // attention.head_dim,
            capacity=capacity,
            head_dim=attention.head_dim,
            dtype=like.dtype,
            device=like.device,
        )

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, cache_kwargs: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(a layer's call) One new key/value per row [bucket, heads, 1, D], written at each row's own index."""
        rows, write = self._rows[: self.bucket], self.write[: self.bucket]
        self.keys[layer_idx][rows, :, write] = key[:, :, 0]
        self.values[layer_idx][rows, :, write] = value[:, :, 0]
        return (
            self.keys[layer_idx][: self.bucket, :, : self.span],
            self.values[layer_idx][: self.bucket, :, : self.span],
        )

    def keep(self) -> torch.Tensor:
        """[bucket, span] (True: attend): each row sees its positions up to and including the one just written."""
        positions = torch.arange(self.span, device=self.write.device)
        return positions <= self.write[: self.bucket, None]

    def load(self, slot: int, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """A prefilled row's keys and values [heads, n, D] into ``slot``'s first n positions."""
        length = keys.shape[1]
        self.keys[layer][slot, :, :length] = keys
        self.values[layer][slot, :, :length] = values

    def grow(self, capacity: int) -> None:
        """Make room for longer rows (rare: a request longer than any before); the contents are kept."""
        if capacity <= self.capacity:
            return
        for buffers in (self.keys, self.values):
            for index, old in enumerate(buffers):
                new = old.new_zeros((*old.shape[:2], capacity, old.shape[3]))
                new[:, :, : self.capacity] = old
                buffers[index] = new
        self.capacity = capacity


class FrameKV:
    """The code predictor's cache: the same 16 positions for every row, rewritten every frame."""

    def __init__(self, attention: Any, *, layers: int, slots: int, positions: int, like: torch.Tensor):
        heads = attention.k_proj.out_features // attention.head_dim
        shape = (slots, heads, positions, attention.head_dim)
        self.keys = [torch.zeros(shape, dtype=like.dtype, device=like.device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=like.dtype, device=like.device) for _ in range(layers)]
        self.bucket = slots
        self.position = 0  # where the next update writes; the caller moves it once per forward

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, cache_kwargs: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.position + key.shape[2]
        keys, values = self.keys[layer_idx][: self.bucket], self.values[layer_idx][: self.bucket]
        keys[:, :, self.position : end] = key
        values[:, :, self.position : end] = value
        return keys[:, :, :end], values[:, :, :end]
