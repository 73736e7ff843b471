"""The VRAM cache: at most ``max_models`` models resident, least recently used evicted only when room is needed.

A model is "in use" while a request holds it (``async with cache.use(spec)``); such a model is never evicted.
Concurrent first requests for one model share a single load. Loads and unloads run in threads, and a slot stays
taken until its model is really gone, so the resident count never exceeds the limit, even mid-swap.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from voicefinetune_inference import metrics
from voicefinetune_inference.errors import ServerBusy

EVICTION_LOG_SIZE = 1000


@dataclass(frozen=True)
class ModelSpec:
    """What to load for a cache key; ``load`` runs in a worker thread and returns the loaded model."""

    key: str
    kind: str  # "custom_voice" | "voice_design" | "base"
    path: str
    load: Callable[[], Any]
    job_id: str | None = None
    speaker_name: str | None = None


@dataclass
class CachedModel:
    spec: ModelSpec
    ready: asyncio.Future
    model: Any = None
    loaded_at: float | None = None
    last_used: float = field(default_factory=time.monotonic)
    in_use: int = 0
    unload_when_free: bool = False

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "key": self.spec.key,
            "kind": self.spec.kind,
            "job_id": self.spec.job_id,
            "speaker_name": self.spec.speaker_name,
            "checkpoint": self.spec.path,
            "state": "loaded" if self.loaded else "loading",
            "in_use": self.in_use,
            "loaded_seconds_ago": None if self.loaded_at is None else round(now - self.loaded_at, 3),
            "idle_seconds": round(now - self.last_used, 3) if self.in_use == 0 else 0.0,
            "size_bytes": getattr(self.model, "size_bytes", None),
            # the model's continuous decode loop: slots, rows running, queue, graphs captured (None without one)
            "decode_loop": self.model.engine_status() if hasattr(self.model, "engine_status") else None,
        }


def _recency(entry: CachedModel) -> tuple[bool, float]:
    return entry.in_use > 0, entry.last_used


@dataclass(frozen=True)
class Eviction:
    key: str
    age_seconds: float
    idle_seconds: float
    in_use: int  # always 0: recorded so that tests and operators can check it


class ModelCache:
    def __init__(self, max_models: int, unload: Callable[[Any], None], wait_timeout: float | None = None):
        if max_models < 1:
            raise ValueError("GPU_MAX_MODELS must be at least 1")
        self.max_models = max_models
        self.wait_timeout = wait_timeout  # None: wait for a free slot as long as it takes
        self._unload = unload
        self._entries: dict[str, CachedModel] = {}
        self._unloading = 0
        self._changed = asyncio.Condition()
        self.total_loads = 0
        self.total_unloads = 0
        self.hits = 0
        self.misses = 0
        self.evictions: collections.deque[Eviction] = collections.deque(maxlen=EVICTION_LOG_SIZE)
        self.eviction_count = 0
        self.peak_resident = 0
        self._background: set[asyncio.Task] = set()

    # --- observation -------------------------------------------------------------------------------------------

    @property
    def resident(self) -> int:
        """Models loaded, loading or still being unloaded: what occupies memory now."""
        return len(self._entries) + self._unloading

    def loaded(self) -> list[CachedModel]:
        """Loaded models, most recently used first (a model in use counts as used now)."""
        return sorted((e for e in self._entries.values() if e.loaded), key=_recency, reverse=True)

    def describe(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [e.describe(now) for e in sorted(self._entries.values(), key=_recency, reverse=True)]

    def busy(self) -> bool:
        return any(e.in_use or not e.loaded for e in self._entries.values()) or self._unloading > 0

    # --- use ---------------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def use(self, spec: ModelSpec) -> AsyncIterator[Any]:
        """Hold the model of ``spec`` (loading it first if needed) for the duration of the block."""
        entry = await self._acquire(spec)
        try:
            yield entry.model
        finally:
            await self._release(entry)

    async def _acquire(self, spec: ModelSpec) -> CachedModel:
        deadline = None if self.wait_timeout is None else time.monotonic() + self.wait_timeout
        async with self._changed:
            while True:
                entry = self._entries.get(spec.key)
                if entry is not None:  # loaded, or loading for another request: no load of its own
                    entry.in_use += 1
                    entry.last_used = time.monotonic()
                    self.hits += 1
                    metrics.CACHE_HITS.inc()
                    break
                if self.resident < self.max_models:
                    entry = CachedModel(spec, asyncio.get_running_loop().create_future(), in_use=1)
                    self._entries[spec.key] = entry
                    self.peak_resident = max(self.peak_resident, self.resident)
                    self.misses += 1
                    metrics.CACHE_MISSES.inc()
                    self._spawn(self._load(entry))
                    break
                # an unload in flight frees a slot soon: wait for it rather than evicting one more model
                victim = None if self._unloading else self._least_recently_used_free()
                if victim is not None:
                    self._evict(victim)
                else:
                    await self._wait_for_a_slot(deadline)
        try:
            await asyncio.shield(entry.ready)
        except BaseException:
            await self._release(entry)
            raise
        return entry

    async def _wait_for_a_slot(self, deadline: float | None) -> None:
        """Wait (holding ``_changed``) for a change; ServerBusy once ``deadline`` passes with every slot in use."""
        if deadline is None or self.wait_timeout is None:  # a deadline only with a wait_timeout
            await self._changed.wait()
            return
        try:
            await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise ServerBusy(
                f"all {self.max_models} model slots (GPU_MAX_MODELS) stayed in use for {self.wait_timeout:g} s: "
                "retry later",
                retry_after=max(1, round(self.wait_timeout / 4)),
            ) from None

    async def _release(self, entry: CachedModel) -> None:
        async with self._changed:
            entry.in_use -= 1
            entry.last_used = time.monotonic()
            # a model still loading is dropped by _load once it is there
            free = entry.loaded and entry.in_use == 0
            if free and entry.unload_when_free and self._entries.get(entry.spec.key) is entry:
                self._drop(entry)
            self._changed.notify_all()

    async def _load(self, entry: CachedModel) -> None:
        started = time.monotonic()
        try:
            model = await asyncio.to_thread(entry.spec.load)
        except BaseException as exc:
            async with self._changed:
                if self._entries.get(entry.spec.key) is entry:
                    del self._entries[entry.spec.key]
                self._changed.notify_all()
            metrics.MODEL_LOAD_FAILURES.inc()
            entry.ready.set_exception(exc)
            entry.ready.exception()  # waiters re-raise it; this marks it retrieved when nobody waits
            return
        async with self._changed:
            entry.model = model
            entry.loaded_at = entry.last_used = time.monotonic()
            self.total_loads += 1
            metrics.MODEL_LOAD_SECONDS.observe(entry.loaded_at - started)
            self._publish()
            if entry.in_use == 0 and entry.unload_when_free:  # asked to go while it loaded, and nobody waits
                self._drop(entry)
            self._changed.notify_all()
        entry.ready.set_result(None)

    # --- eviction and unloading -------------------------------------------------------------------------------

    def _least_recently_used_free(self) -> CachedModel | None:
        free = [e for e in self._entries.values() if e.loaded and e.in_use == 0]
        return min(free, key=lambda e: e.last_used) if free else None

    def _evict(self, entry: CachedModel) -> None:
        now = time.monotonic()
        record = Eviction(entry.spec.key, now - (entry.loaded_at or now), now - entry.last_used, entry.in_use)
        self.evictions.append(record)
        self.eviction_count += 1
        metrics.CACHE_EVICTIONS.inc()
        metrics.AGE_AT_EVICTION_SECONDS.observe(record.age_seconds)
        self._drop(entry)

    def _drop(self, entry: CachedModel) -> None:
        """Remove a free, loaded entry and unload its model in a thread; its slot stays taken until done.

        Called with the condition's lock held.
        """
        del self._entries[entry.spec.key]
        model, entry.model = entry.model, None
        self._unloading += 1
        self.total_unloads += 1  # counted when it stops being usable, so loads - unloads = loaded, always
        self._publish()
        self._spawn(self._unload_in_thread(model))

    async def _unload_in_thread(self, model: Any) -> None:
        started = time.monotonic()
        try:
            await asyncio.to_thread(self._unload, model)
        finally:
            del model
            async with self._changed:
                self._unloading -= 1
                metrics.MODEL_UNLOAD_SECONDS.observe(time.monotonic() - started)
                self._changed.notify_all()

    async def unload(self, key: str | None = None) -> int:
        """Unload one model (``key``) or all; models in use go as soon as their last request ends.

        Returns how many models were unloaded now or marked to go.
        """
        async with self._changed:
            targets = [e for k, e in list(self._entries.items()) if key is None or k == key]
            for entry in targets:
                if entry.loaded and entry.in_use == 0:
                    self._drop(entry)
                else:
                    entry.unload_when_free = True
        await self.settle()
        return len(targets)

    async def discard(self, key: str) -> None:
        """Unload ``key`` now, or once its requests (and a load in flight) end, and wait until it is gone."""
        await self.unload(key)
        async with self._changed:
            await self._changed.wait_for(lambda: key not in self._entries and self._unloading == 0)

    async def settle(self) -> None:
        """Wait until no unload is in flight."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._unloading == 0)

    async def close(self) -> None:
        await self.unload()
        for task in list(self._background):
            task.cancel()

    # --- helpers -----------------------------------------------------------------------------------------------

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _publish(self) -> None:
        metrics.MODELS_LOADED.set(sum(1 for e in self._entries.values() if e.loaded))
        metrics.LOADED_MODEL_BYTES.set(
            sum(getattr(e.model, "size_bytes", 0) or 0 for e in self._entries.values())
        )
