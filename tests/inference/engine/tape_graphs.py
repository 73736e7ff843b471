"""A CPU stand-in for ``torch.cuda.CUDAGraph`` with its replay semantics: `TapeRecorder` records the ATen ops a step
dispatches (each with its arguments) and a replay runs that op list again, every op on the very same tensors it saw
at capture, or on what the replay's earlier ops produced in place of their captured outputs.

Like a CUDA graph, a replay therefore sees new inputs only where they were copied into tensors the capture read:
anything the step computed on the host (a Python number, a tensor made from host values, a buffer swapped for a new
one) is replayed as it was at capture. Unlike a CUDA graph, its intermediates are fresh tensors each replay (the
data flow is the same); `held_bytes` counts what the recorded ops produced, as a graph's pool would hold it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_leaves, tree_unflatten

Op = tuple[Any, tuple, dict, Any]  # (func, args, kwargs, captured output)


class _Tape(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, out))
        return out


class Tape:
    """One recorded step."""

    def __init__(self, step: Callable[[], None], ops: list[Op]):
        self.step = step  # what was recorded (e.g. a `functools.partial` of the decoder's frame)
        self.ops = ops
        self.replays = 0
        # per op: its flattened arguments, which of them earlier ops produced (a replay swaps those for what it
        # produced in their place), and its outputs' ids; an in-place op's output is its (possibly outside) input
        self._plan = []
        self._inputs: dict[int, torch.Tensor] = {}
        self.constants: dict[int, torch.Tensor] = {}
        made: set[int] = set()
        for func, args, kwargs, out in ops:
            leaves, spec = tree_flatten((args, kwargs))
            swapped = [i for i, leaf in enumerate(leaves) if id(leaf) in made]
            for leaf in leaves:
                if isinstance(leaf, torch.Tensor) and id(leaf) not in made:
                    # a tensor the step made from Python values (``torch.tensor``, ``x[i] = False``) is a constant
                    known = self.constants if func is torch.ops.aten.lift_fresh.default else self._inputs
                    known.setdefault(id(leaf), leaf)
            outputs = [id(t) if isinstance(t, torch.Tensor) else None for t in tree_leaves(out)]
            made.update(key for key in outputs if key is not None)
            self._plan.append((func, leaves, spec, swapped, outputs))

    def inputs(self) -> list[torch.Tensor]:
        """The tensors the step read before any recorded op produced them (what a CUDA graph reads by address)."""
        return list(self._inputs.values())

    def held_bytes(self) -> int:
        """Bytes of the storages the recorded ops allocated (views of the inputs are not new memory)."""
        inputs = {t.untyped_storage().data_ptr() for t in self.inputs()}
        storages = {}
        for *_, out in self.ops:
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                    storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return sum(storages.values())

    def replay(self) -> None:
        now: dict[int, Any] = {}  # id(captured output) -> this replay's tensor in its place
        for func, leaves, spec, swapped, outputs in self._plan:
            if swapped:
                leaves = list(leaves)
                for index in swapped:
                    leaves[index] = now[id(leaves[index])]
            args, kwargs = tree_unflatten(leaves, spec)
            for key, new in zip(outputs, tree_leaves(func(*args, **kwargs)), strict=True):
                if key is not None:
                    now[key] = new
        self.replays += 1


class TapeRecorder:
    """`cuda_graphs.Recorder` on CPU: ``record`` runs the step once under the tape (as a CUDA warm-up would run it)."""

    def __init__(self) -> None:
        self.tapes: list[Tape] = []

    def record(self, step: Callable[[], None]) -> Callable[[], None]:
        with _Tape() as recording:
            step()
        tape = Tape(step, recording.ops)
        self.tapes.append(tape)
        return tape.replay

    def held_bytes(self) -> int:
        return sum(tape.held_bytes() for tape in self.tapes)

    def release(self) -> None:
        self.tapes.clear()
