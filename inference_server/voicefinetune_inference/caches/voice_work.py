"""The requests running for each fine-tuned voice, so that unregistering the voice (deleting its job) stops them
rather than letting them load the voice again, restore its folder and upload its audio."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from voicefinetune_inference.errors import VoiceDeleted

T = TypeVar("T")


class VoiceWork:
    def __init__(self) -> None:
        self._running: dict[str, set[asyncio.Task]] = {}
        self._stopped: set[asyncio.Task] = set()

    async def run(self, job_id: str, work: Coroutine[Any, Any, T]) -> T:
        """Await ``work`` on behalf of the voice of ``job_id``; ``VoiceDeleted`` when ``stop(job_id)`` ends it."""
        task = asyncio.ensure_future(work)
        running = self._running.setdefault(job_id, set())
        running.add(task)
        try:
            return await task  # a cancelled caller cancels the work too
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if task in self._stopped and (caller is None or not caller.cancelling()):
                raise VoiceDeleted.of(job_id) from None
            raise
        finally:
            running.discard(task)
            self._stopped.discard(task)
            if not running and self._running.get(job_id) is running:
                del self._running[job_id]

    async def stop(self, job_id: str) -> None:
        """Cancel every request running for ``job_id`` and wait until they have ended."""
        tasks = list(self._running.get(job_id, ()))
        for task in tasks:
            self._stopped.add(task)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
