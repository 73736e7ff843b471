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

from voicefinetune_inference.engine.kv_cache import layer_buffers


class SlotKV:
    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.keys, self.values = keys, values
        slots, _, self.capacity, _ = keys[0].shape
        self.slots = slots
        self.bucket = slots  # the step runs over slots [0, bucket)
        self.span = self.capacity  # and attends over positions [0, span)
        device = keys[0].device
        self.write = torch.zeros(slots, dtype=torch.long, device=device)  # per slot: where the next key goes
        self._rows = torch.arange(slots, device=device)
        self._positions = torch.arange(self.capacity, device=device)

    @classmethod
    def for_layers(
        cls, attention: Any, *, layers: int, slots: int, capacity: int, like: torch.Tensor
    ) -> SlotKV:
        return cls(*layer_buffers(attention, layers=layers, rows=slots, positions=capacity, like=like))

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
        return self._positions[: self.span] <= self.write[: self.bucket, None]

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
        self._positions = torch.arange(capacity, device=self.write.device)


class FrameKV:
    """The code predictor's cache: the same 16 positions for every row, rewritten every frame."""

    def __init__(self, attention: Any, *, layers: int, slots: int, positions: int, like: torch.Tensor):
        self.keys, self.values = layer_buffers(
            attention, layers=layers, rows=slots, positions=positions, like=like
        )
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
