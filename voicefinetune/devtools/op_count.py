"""Counting the aten operations torch code dispatches: how many launches a step costs, on any device (meta too)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """Counts the operations dispatched inside it by name. Of the aten operations, `computing` are those that compute
    (each is at least one kernel launch on a GPU; a foreach operation may be several); `views` only alias memory (no
    launch). Others (the profiler's markers) are only in `by_name`."""

    def __init__(self) -> None:
        super().__init__()
        self.by_name: Counter[str] = Counter()
        self.computing = 0
        self.views = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        self.by_name[str(func)] += 1
        if func.namespace == "aten":
            if func.is_view:
                self.views += 1
            else:
                self.computing += 1
        return func(*args, **(kwargs or {}))
