"""Request fusion: items submitted concurrently under one key are run together in one call.

Each key has one worker at a time, so calls for one key never overlap (a loaded model is not safe for concurrent
calls). When the first item arrives the worker waits ``window`` seconds for others, unless ``max_batch`` are
already queued; under load the queue refills while a call runs, so the next call starts full and without waiting.
With ``delivers``, the call also gets ``deliver(index, result)`` to resolve one item before the whole batch ends
(e.g. a row that reached its EOS); its place in the batch's final results is then dropped.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")

# run(key, items) -> one result per item, in order; an exception in place of a result fails only that item.
RunBatch = Callable[..., Awaitable[Sequence[Any]]]


@dataclass
class _Pending(Generic[Item]):
    item: Item
    future: asyncio.Future


def _deliver(batch: list[_Pending], index: int, result: Any) -> None:
    """One item's result before its batch ends (an exception fails only that item); later results are dropped."""
    future = batch[index].future
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class Batcher:
    def __init__(self, run: RunBatch, window_seconds: float, max_batch: int, *, delivers: bool = False):
        self._run = run
        self.delivers = delivers  # run(key, items, deliver=...) may resolve items early (on the event loop)
        self.window = max(0.0, window_seconds)
        self.max_batch = max(1, max_batch)
        self._queues: dict[str, list[_Pending]] = {}
        self._workers: dict[str, asyncio.Task] = {}
        self.calls = 0
        self.items = 0
        self.largest_batch = 0

    async def submit(self, key: str, item: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, []).append(_Pending(item, future))
        if key not in self._workers:
            self._workers[key] = asyncio.get_running_loop().create_task(self._work(key))
        return await future

    async def submit_many(self, key: str, items: Sequence[Any]) -> list[Any]:
        """Submit items together; results (or exceptions) come back in the same order."""
        return list(await asyncio.gather(*(self.submit(key, item) for item in items), return_exceptions=True))

    async def _work(self, key: str) -> None:
        queue = self._queues[key]
        try:
            while queue:
                if len(queue) < self.max_batch and self.window:
                    await asyncio.sleep(self.window)
                batch = [p for p in queue[: self.max_batch] if not p.future.done()]
                del queue[: self.max_batch]
                if batch:
                    await self._run_one(key, batch)
        finally:
            del self._workers[key]
            if queue:  # only on cancellation: fail what is left rather than leave it hanging
                for pending in queue:
                    if not pending.future.done():
                        pending.future.set_exception(RuntimeError("the inference worker stopped"))
            self._queues.pop(key, None)

    async def _run_one(self, key: str, batch: list[_Pending]) -> None:
        self.calls += 1
        self.items += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            items = [p.item for p in batch]
            if self.delivers:
                results = list(await self._run(key, items, deliver=functools.partial(_deliver, batch)))
            else:
                results = list(await self._run(key, items))
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} items produced {len(results)} results")
        except asyncio.CancelledError:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the inference worker stopped"))
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            results = [exc] * len(batch)
        for index, result in enumerate(results):
            _deliver(batch, index, result)

    async def close(self) -> None:
        for task in list(self._workers.values()):
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
