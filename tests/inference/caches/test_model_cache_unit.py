"""ModelCache and Batcher on their own, with plain objects as models: ordering and waiting made deterministic."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from prometheus_client import REGISTRY
from voicefinetune_inference.caches.model_cache import ModelCache, ModelSpec
from voicefinetune_inference.errors import ServerBusy
from voicefinetune_inference.serving.batcher import Batcher

# A cache whose slot accounting is wrong waits forever instead of failing: every test here fails within this time.
pytestmark = pytest.mark.timeout(15)
WAIT_SECONDS = 5.0


class Model:
    size_bytes = 10

    def __init__(self, name: str):
        self.name = name


def spec(name: str, loads: list[str]) -> ModelSpec:
    def load() -> Model:
        loads.append(name)
        return Model(name)

    return ModelSpec(key=name, kind="custom_voice", path=f"/models/{name}", load=load, job_id=name)


async def until(condition, what: str) -> None:
    """Wait (polling the event loop) until ``condition()`` holds; fail after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {WAIT_SECONDS} s")
        await asyncio.sleep(0.005)


def load_failures() -> float:
    return REGISTRY.get_sample_value("vft_inference_model_load_failures_total") or 0.0


async def test_a_model_in_use_is_never_evicted_the_newcomer_waits():
    loads: list[str] = []
    unloaded: list[str] = []
    cache = ModelCache(1, lambda model: unloaded.append(model.name))
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold_a() -> None:
        async with cache.use(spec("a", loads)) as model:
            assert model.name == "a"
            holding.set()
            await release.wait()

    async def use_b() -> str:
        async with cache.use(spec("b", loads)) as model:
            return model.name

    holder = asyncio.create_task(hold_a())
    await asyncio.wait_for(holding.wait(), WAIT_SECONDS)
    waiter = asyncio.create_task(use_b())
    await asyncio.sleep(0.2)
    assert not waiter.done() and loads == ["a"] and unloaded == []  # b waits; a (in use) stays
    release.set()
    assert await asyncio.wait_for(waiter, WAIT_SECONDS) == "b"
    await asyncio.wait_for(holder, WAIT_SECONDS)
    await asyncio.wait_for(cache.settle(), WAIT_SECONDS)
    assert loads == ["a", "b"] and unloaded == ["a"]
    assert [(e.key, e.in_use) for e in cache.evictions] == [("a", 0)]
    assert cache.total_loads == 2 and cache.total_unloads == 1 and cache.peak_resident == 1


async def test_least_recently_used_is_evicted_and_only_when_room_is_needed():
    loads: list[str] = []
    cache = ModelCache(2, lambda model: None)
    for name in ("a", "b", "a"):
        async with cache.use(spec(name, loads)):
            pass
    assert cache.eviction_count == 0 and {e.spec.key for e in cache.loaded()} == {"a", "b"}
    async with cache.use(spec("c", loads)):
        pass
    assert [e.key for e in cache.evictions] == ["b"]  # "a" was used after "b"
    assert [e.spec.key for e in cache.loaded()] == ["c", "a"]


async def test_a_failed_load_frees_its_slot_and_reaches_every_waiter():
    cache = ModelCache(1, lambda model: None)

    def broken() -> Model:
        raise OSError("no such checkpoint")

    bad = ModelSpec(key="bad", kind="custom_voice", path="/nowhere", load=broken)

    async def attempt() -> str:
        try:
            async with cache.use(bad):
                return "loaded"
        except OSError as exc:
            return str(exc)

    assert (
        await asyncio.wait_for(asyncio.gather(attempt(), attempt()), WAIT_SECONDS)
        == ["no such checkpoint"] * 2
    )
    assert cache.resident == 0 and cache.total_loads == 0
    async with cache.use(spec("good", [])) as model:
        assert model.name == "good"


async def test_unload_of_a_busy_model_happens_when_its_request_ends():
    cache = ModelCache(2, lambda model: None)
    async with cache.use(spec("a", [])):
        await cache.unload()
        assert [e.spec.key for e in cache.loaded()] == ["a"]
    await asyncio.wait_for(cache.settle(), WAIT_SECONDS)
    assert cache.loaded() == [] and cache.total_unloads == 1


async def test_close_unloads_every_model():
    unloaded: list[str] = []
    cache = ModelCache(2, lambda model: unloaded.append(model.name))
    for name in ("a", "b"):
        async with cache.use(spec(name, [])):
            pass
    await asyncio.wait_for(cache.close(), WAIT_SECONDS)
    assert sorted(unloaded) == ["a", "b"]
    assert (cache.loaded(), cache.resident, cache.total_unloads) == ([], 0, 2)


async def test_busy_while_a_model_loads_is_held_or_is_still_being_unloaded():
    loading, unloading, release = threading.Event(), threading.Event(), asyncio.Event()
    cache = ModelCache(1, lambda model: unloading.wait(WAIT_SECONDS))
    slow = ModelSpec(
        key="a", kind="base", path="/models/a", load=lambda: loading.wait(WAIT_SECONDS) and Model("a")
    )
    assert not cache.busy()

    async def hold() -> None:
        async with cache.use(slow):
            await release.wait()

    holder = asyncio.create_task(hold())
    await until(lambda: cache.resident == 1, "loading")
    assert cache.busy() and cache.loaded() == []  # loading
    loading.set()
    await until(lambda: cache.loaded(), "loaded")
    assert cache.busy()  # held by a request
    release.set()
    await asyncio.wait_for(holder, WAIT_SECONDS)
    assert not cache.busy()  # loaded and idle
    unloader = asyncio.create_task(cache.unload())
    await until(lambda: not cache.loaded(), "dropped")
    assert cache.resident == 1 and cache.busy()  # its memory is not free until the unload thread returns
    unloading.set()
    assert await asyncio.wait_for(unloader, WAIT_SECONDS) == 1
    assert cache.resident == 0 and not cache.busy()


async def test_idle_time_counts_from_the_end_of_the_last_request():
    cache = ModelCache(1, lambda model: None)
    async with cache.use(spec("a", [])):
        [row] = cache.describe()
        assert (row["key"], row["state"], row["in_use"], row["idle_seconds"]) == ("a", "loaded", 1, 0.0)
    released = time.monotonic()
    await asyncio.sleep(0.05)  # let idle time pass
    [row] = cache.describe()
    elapsed = time.monotonic() - released
    assert 0.05 <= row["idle_seconds"] <= round(elapsed, 3)
    assert row["loaded_seconds_ago"] >= row["idle_seconds"]
    async with cache.use(spec("b", [])):
        pass
    evicted = time.monotonic() - released
    [record] = cache.evictions
    assert (
        record.key == "a"
        and 0.05 <= record.idle_seconds <= evicted
        and record.age_seconds >= record.idle_seconds
    )


async def test_each_failed_load_counts_once_in_the_failure_metric():
    cache = ModelCache(1, lambda model: None)

    def broken() -> Model:
        raise OSError("no such checkpoint")

    bad = ModelSpec(key="bad", kind="custom_voice", path="/nowhere", load=broken)

    async def attempt() -> None:
        with pytest.raises(OSError, match="no such checkpoint"):
            async with cache.use(bad):
                pass

    before = load_failures()
    await asyncio.wait_for(asyncio.gather(attempt(), attempt()), WAIT_SECONDS)  # one shared load
    assert load_failures() - before == 1
    async with cache.use(spec("good", [])):
        pass
    assert load_failures() - before == 1
    await asyncio.wait_for(attempt(), WAIT_SECONDS)
    assert load_failures() - before == 2


async def test_counters_and_the_loaded_bytes_gauge_follow_loads_hits_and_evictions():
    cache = ModelCache(2, lambda model: None)
    for name in ("a", "b", "a", "c", "a", "d"):
        async with cache.use(spec(name, [])):
            pass
    assert (cache.misses, cache.hits) == (4, 2)
    assert [e.key for e in cache.evictions] == ["b", "c"] and cache.eviction_count == 2
    assert REGISTRY.get_sample_value("vft_inference_loaded_model_bytes") == 2 * Model.size_bytes
    assert [row["size_bytes"] for row in cache.describe()] == [Model.size_bytes] * 2


async def test_a_model_still_loading_has_no_size_yet():
    loading = threading.Event()
    cache = ModelCache(1, lambda model: None)
    slow = ModelSpec(
        key="a", kind="base", path="/models/a", load=lambda: loading.wait(WAIT_SECONDS) and Model("a")
    )

    async def use() -> None:
        async with cache.use(slow):
            pass

    user = asyncio.create_task(use())
    await until(lambda: cache.resident == 1, "loading")
    [row] = cache.describe()
    assert (row["state"], row["size_bytes"], row["loaded_seconds_ago"]) == ("loading", None, None)
    loading.set()
    await asyncio.wait_for(user, WAIT_SECONDS)


async def test_a_model_whose_request_was_cancelled_while_it_loaded_stays_cached():
    loading = threading.Event()
    loads: list[str] = []
    unloaded: list[str] = []
    cache = ModelCache(1, lambda model: unloaded.append(model.name))

    def load() -> Model:
        loading.wait(WAIT_SECONDS)
        loads.append("a")
        return Model("a")

    slow = ModelSpec(key="a", kind="base", path="/models/a", load=load)

    async def use() -> None:
        async with cache.use(slow):
            pass

    user = asyncio.create_task(use())
    await until(lambda: cache.resident == 1, "loading")
    user.cancel()  # the client went away; the load it started goes on in its thread
    with pytest.raises(asyncio.CancelledError):
        await user
    loading.set()
    await until(lambda: cache.total_loads == 1, "loaded")
    await asyncio.wait_for(cache.settle(), WAIT_SECONDS)
    assert (cache.resident, unloaded) == (1, [])  # nobody asked it to go: the next request finds it
    async with cache.use(slow) as model:
        assert model.name == "a"
    assert loads == ["a"] and cache.hits == 1


async def test_a_request_that_finds_every_slot_held_is_told_to_retry_after_a_quarter_of_the_wait():
    cache = ModelCache(1, lambda model: None, wait_timeout=2.2)
    release = asyncio.Event()

    async def hold() -> None:
        async with cache.use(spec("a", [])):
            await release.wait()

    holder = asyncio.create_task(hold())
    await until(lambda: cache.loaded(), "a loaded")
    started = time.monotonic()
    with pytest.raises(ServerBusy) as caught:
        async with cache.use(spec("b", [])):
            pass
    waited = time.monotonic() - started
    assert 2.2 <= waited < 2.2 + WAIT_SECONDS
    assert str(caught.value) == "all 1 model slots (GPU_MAX_MODELS) stayed in use for 2.2 s: retry later"
    assert caught.value.retry_after == 1  # round(2.2 / 4)
    release.set()
    await asyncio.wait_for(holder, WAIT_SECONDS)


async def test_batcher_fuses_concurrent_items_in_order_and_caps_the_batch():
    calls: list[list[int]] = []

    async def run(key: str, items: list[int]) -> list[object]:
        calls.append(items)
        await asyncio.sleep(0.01)
        return [ValueError(f"bad {i}") if i == 5 else i * 10 for i in items]

    batcher = Batcher(run, window_seconds=0.02, max_batch=4)
    results = await batcher.submit_many("voice", list(range(10)))
    assert [r if not isinstance(r, Exception) else str(r) for r in results] == [
        0,
        10,
        20,
        30,
        40,
        "bad 5",
        60,
        70,
        80,
        90,
    ]
    assert [len(c) for c in calls] == [4, 4, 2] and sum(calls, []) == list(range(10))
    assert batcher.largest_batch == 4 and batcher.calls == 3


async def test_batcher_keys_run_separately_and_a_failing_call_fails_only_its_items():
    async def run(key: str, items: list[str]) -> list[str]:
        if key == "broken":
            raise RuntimeError("model exploded")
        return [f"{key}:{i}" for i in items]

    batcher = Batcher(run, window_seconds=0.005, max_batch=8)
    good, bad = await asyncio.gather(
        batcher.submit_many("ok", ["x", "y"]), batcher.submit_many("broken", ["z"]), return_exceptions=True
    )
    assert good == ["ok:x", "ok:y"]
    assert isinstance(bad[0], RuntimeError)
