"""The models resident on the GPU as a whole: status, unloading them on demand or after an idle timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from voicefinetune.schemas import GPUStatus, InvalidInput
from voicefinetune.settings import Settings
from voicefinetune_inference import metrics
from voicefinetune_inference.activity import RequestActivity
from voicefinetune_inference.caches.model_cache import ModelCache
from voicefinetune_inference.engine import tts_model
from voicefinetune_inference.engine.lora import AdapterBank

log = logging.getLogger(__name__)


class GpuKeeper:
    def __init__(self, settings: Settings, cache: ModelCache, activity: RequestActivity):
        self.settings = settings
        self.cache = cache
        self.activity = activity
        self.idle_timeout = settings.gpu_idle_timeout
        self._idle_task: asyncio.Task | None = None
        self._idle_config_changed = asyncio.Event()

    def start(self) -> None:
        metrics.VRAM_USED_BYTES.set_function(lambda: tts_model.vram_used_bytes(self.settings))
        if self._idle_task is None:
            self._idle_task = asyncio.get_running_loop().create_task(self._watch_idle())

    async def stop(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._idle_task
            self._idle_task = None

    def status(self) -> GPUStatus:
        loaded = self.cache.loaded()
        current = loaded[0].spec if loaded else None
        return GPUStatus(
            model_loaded=bool(loaded),
            loaded_checkpoint=current.path if current else None,
            speaker_name=current.speaker_name if current else None,
            auto_unload_enabled=self.idle_timeout > 0,
            idle_timeout_seconds=self.idle_timeout,
            idle_seconds=round(self.activity.idle_seconds(), 1),
            total_requests=self.activity.total_requests,
            total_loads=self.cache.total_loads,
            total_unloads=self.cache.total_unloads,
            **tts_model.gpu_memory(self.settings),
            loaded_models=[self._with_adapters(entry) for entry in self.cache.describe()],
            max_models=self.cache.max_models,
            max_adapters=self.settings.gpu_max_adapters,
            engine=self.settings.engine,
        )

    def _with_adapters(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A base model's entry also lists the LoRA voices attached to it (most recently used first)."""
        models = {e.spec.key: e.model for e in self.cache.loaded()}
        model = models.get(entry["key"])
        bank = (
            AdapterBank.existing(model.tts.model.talker)
            if model is not None and model.tts is not None
            else None
        )
        return {**entry, "adapters": None if bank is None else bank.describe()}

    async def unload_all(self) -> dict[str, Any]:
        count = await self.cache.unload()
        return {"status": "unloaded", "unloaded": count, "total_unloads": self.cache.total_unloads}

    def set_idle_timeout(self, seconds: int) -> dict[str, Any]:
        if seconds < 0:
            raise InvalidInput("idle_timeout_seconds must be 0 (disabled) or more")
        self.idle_timeout = seconds
        self._idle_config_changed.set()
        return {"idle_timeout_seconds": seconds, "auto_unload_enabled": seconds > 0}

    async def _watch_idle(self) -> None:
        while True:
            timeout = self.idle_timeout
            interval = min(1.0, max(0.05, timeout / 4)) if timeout > 0 else 1.0
            with contextlib.suppress(TimeoutError):  # a new timeout (PUT /gpu/config) applies at once
                await asyncio.wait_for(self._idle_config_changed.wait(), interval)
            self._idle_config_changed.clear()
            timeout = self.idle_timeout
            if timeout <= 0 or self.activity.in_flight or self.cache.busy() or not self.cache.loaded():
                continue
            if time.monotonic() - self.activity.last_activity >= timeout:
                log.info("idle for %s s: unloading every model", timeout)
                await self.cache.unload()
