"""ModelCache.discard (what unregistering a voice waits on), with plain objects as models and a load held at a
known point by an event: it returns only once the model is gone, including one that was still loading."""

from __future__ import annotations

import asyncio
import threading

import pytest
from voicefinetune_inference.caches.model_cache import ModelCache, ModelSpec

pytestmark = pytest.mark.timeout(15)


async def still_running(task: asyncio.Task, grace: float = 0.1) -> bool:
    """True when ``task`` has not finished within ``grace`` seconds (a claim that something does not happen)."""
    done, _ = await asyncio.wait([task], timeout=grace)
    return not done


class Model:
    def __init__(self, name: str):
        self.name = name


async def test_discard_waits_for_a_load_whose_requests_were_cancelled_then_unloads_it():
    proceed = threading.Event()
    started = threading.Event()
    unloaded: list[str] = []

    def load() -> Model:
        started.set()
        assert proceed.wait(10)
        return Model("voice")

    cache = ModelCache(2, lambda model: unloaded.append(model.name))
    voice = ModelSpec(key="voice", kind="custom_voice", path="/models/voice", load=load, job_id="voice")

    async def use() -> None:
        async with cache.use(voice):
            pass

    request = asyncio.create_task(use())
    await asyncio.to_thread(started.wait, 10)
    request.cancel()  # the request goes away while its model loads (as a DELETE stops it)
    with pytest.raises(asyncio.CancelledError):
        await request
    discarding = asyncio.create_task(cache.discard("voice"))
    assert await still_running(discarding)  # the load still runs: the model is not gone yet

    proceed.set()
    await asyncio.wait_for(discarding, 5)

    assert unloaded == ["voice"] and cache.describe() == [] and cache.resident == 0
    assert cache.total_loads == cache.total_unloads == 1


async def test_discard_of_a_model_in_use_returns_once_its_request_ends():
    cache = ModelCache(1, lambda model: None)
    voice = ModelSpec(
        key="voice", kind="custom_voice", path="/models/voice", load=lambda: Model("v"), job_id="voice"
    )
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with cache.use(voice):
            holding.set()
            await release.wait()

    request = asyncio.create_task(hold())
    await holding.wait()
    discarding = asyncio.create_task(cache.discard("voice"))
    assert await still_running(discarding)

    release.set()
    await request
    await asyncio.wait_for(discarding, 5)
    assert cache.describe() == [] and cache.total_unloads == 1
