"""The VRAM LRU through the service's own observable state: /gpu/status, the cache's counters and eviction log."""

from __future__ import annotations

import asyncio
import base64
import random
import time

import httpx
import pytest

GPU_STATUS_FIELDS = {
    "model_loaded",
    "loaded_checkpoint",
    "speaker_name",
    "auto_unload_enabled",
    "idle_timeout_seconds",
    "idle_seconds",
    "total_requests",
    "total_loads",
    "total_unloads",
    "gpu_name",
    "gpu_memory_total_gb",
    "gpu_memory_allocated_gb",
    "gpu_memory_reserved_gb",
    "gpu_memory_free_gb",
}


async def test_two_slots_four_voices_fifty_concurrent_requests(make_service, tiny_models, kit):
    service = await make_service(gpu_max_models=2, scheduler="batch")  # counts the batcher's fused calls
    voices = ["v1", "v2", "v3", "v4"]
    for job_id in voices:
        await kit.add_voice(service, tiny_models, job_id=job_id, backed_up=False)
    rng = random.Random(3)
    targets = [voices[i % 4] for i in range(50)]
    rng.shuffle(targets)
    observed_loaded: list[int] = []
    done = asyncio.Event()

    async with kit.http_client(service) as client:

        async def watch() -> None:
            while not done.is_set():
                status = (await client.get("/gpu/status")).json()
                observed_loaded.append(len(status["loaded_models"]))
                await asyncio.sleep(0.02)

        async def one(i: int, job_id: str) -> httpx.Response:
            return await client.post(
                f"/infer/{job_id}", json={"text": f"Request {i} for {job_id}.", "upload_to_s3": False}
            )

        watcher = asyncio.create_task(watch())
        answers = await asyncio.gather(*(one(i, job_id) for i, job_id in enumerate(targets)))
        done.set()
        await watcher
        status = (await client.get("/gpu/status")).json()

    assert [a.status_code for a in answers] == [200] * 50, answers[0].text
    assert all(a.headers["content-type"] == "audio/wav" for a in answers)
    assert observed_loaded and max(observed_loaded) <= 2
    assert service.cache.peak_resident <= 2
    # no model was evicted while serving a request
    assert service.cache.evictions and all(e.in_use == 0 for e in service.cache.evictions)
    # the counters tell what happened
    assert set(status) >= GPU_STATUS_FIELDS
    assert status["total_requests"] == 50
    assert status["total_loads"] == service.cache.misses >= 4
    assert status["total_unloads"] == service.cache.eviction_count
    assert status["total_loads"] - status["total_unloads"] == len(status["loaded_models"]) <= 2
    assert status["model_loaded"] is True and status["speaker_name"] == kit.speaker
    assert status["loaded_checkpoint"].startswith("jobs/") and status["max_models"] == 2
    assert status["gpu_name"] is None and status["gpu_memory_total_gb"] is None  # CPU: no torch.cuda figures
    assert service.batcher.items == 50 and service.batcher.calls < 50  # requests were fused


async def test_concurrent_first_requests_load_once(make_service, tiny_models, kit):
    service = await make_service(gpu_max_models=1, inference_max_batch=1)  # no fusion: 4 separate cache uses
    await kit.add_voice(service, tiny_models, job_id="solo", backed_up=False)
    async with kit.http_client(service) as client:
        answers = await asyncio.gather(
            *(client.post("/infer/solo", json={"text": f"Hi {i}.", "upload_to_s3": False}) for i in range(4))
        )
    assert all(a.status_code == 200 for a in answers)
    assert service.cache.total_loads == 1 and service.cache.misses == 1 and service.cache.hits == 3


async def test_voice_design_and_base_share_the_cache(make_service, tiny_models, kit):
    service = await make_service(gpu_max_models=1)
    await kit.add_voice(service, tiny_models, job_id="hero", backed_up=False)
    async with kit.http_client(service) as client:
        assert (
            await client.post("/infer/hero", json={"text": "Hi.", "upload_to_s3": False})
        ).status_code == 200
        design = await client.post("/voice-design", json={"text": "Hi.", "instruct": "A calm voice"})
        assert design.status_code == 200 and design.headers["content-type"] == "audio/wav"
        status = (await client.get("/gpu/status")).json()
    assert [m["key"] for m in status["loaded_models"]] == ["voice_design"]
    assert status["speaker_name"] is None and status["total_loads"] == 2 and status["total_unloads"] == 1
    assert service.cache.evictions[-1].key == "voice:hero"


async def wait_until_unloaded(client, limit: float = 60.0) -> dict:
    deadline = time.monotonic() + limit
    while True:
        status = (await client.get("/gpu/status")).json()
        if not status["model_loaded"] or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


async def wait_until_idle(client, seconds: float, limit: float = 60.0) -> dict:
    """The status once the server reports ``seconds`` without a request (status requests do not count)."""
    deadline = time.monotonic() + limit
    while True:
        status = (await client.get("/gpu/status")).json()
        if status["idle_seconds"] >= seconds or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


async def test_idle_timeout_unloads_everything_and_the_next_request_reloads(make_service, tiny_models, kit):
    service = await make_service(gpu_idle_timeout=1, gpu_max_models=2)
    await kit.add_voice(service, tiny_models, job_id="a", backed_up=False)
    await kit.add_voice(service, tiny_models, job_id="b", backed_up=False)
    async with kit.http_client(service) as client:
        for job_id in ("a", "b"):
            assert (
                await client.post(f"/infer/{job_id}", json={"text": "Hi.", "upload_to_s3": False})
            ).status_code == 200
        assert (await client.get("/gpu/status")).json()["model_loaded"] is True
        status = await wait_until_unloaded(client)
        assert status["model_loaded"] is False and status["loaded_models"] == []
        assert status["total_loads"] == 2 and status["total_unloads"] == 2 and status["idle_seconds"] >= 1
        again = await client.post("/infer/a", json={"text": "Back again.", "upload_to_s3": False})
        assert again.status_code == 200
        status = (await client.get("/gpu/status")).json()
        assert status["model_loaded"] is True and status["total_loads"] == 3

        # 0 disables auto-unload, live
        config = await client.put("/gpu/config", json={"idle_timeout_seconds": 0})
        assert config.json() == {"idle_timeout_seconds": 0, "auto_unload_enabled": False}
        # idle well past the old 1 s timeout and a whole 1 s round of the idle watcher: an unload would be done
        status = await wait_until_idle(client, 2.5)
        assert status["model_loaded"] is True and status["auto_unload_enabled"] is False
        assert status["idle_timeout_seconds"] == 0

        await client.put("/gpu/config", json={"idle_timeout_seconds": 1})
        assert (await wait_until_unloaded(client))["model_loaded"] is False

        bad = await client.put("/gpu/config", json={"idle_timeout_seconds": -5})
        assert bad.status_code == 422


async def test_gpu_unload_frees_everything(make_service, tiny_models, kit):
    service = await make_service(gpu_max_models=3)
    await kit.add_voice(service, tiny_models, job_id="a", backed_up=False, preload=True)
    await kit.add_voice(service, tiny_models, job_id="b", backed_up=False, preload=True)
    async with kit.http_client(service) as client:
        assert len((await client.get("/gpu/status")).json()["loaded_models"]) == 2
        answer = await client.post("/gpu/unload")
        assert answer.status_code == 200 and answer.json()["unloaded"] == 2
        status = (await client.get("/gpu/status")).json()
        assert status["model_loaded"] is False and status["total_unloads"] == 2
        assert (await client.post("/infer/b", json={"text": "Hi.", "upload_to_s3": False})).status_code == 200


@pytest.mark.timeout(300)  # three model loads on a shared CPU
async def test_status_names_the_voice_in_use_after_another_model_was_used(make_service, tiny_models, kit):
    """/gpu/status's loaded_checkpoint and speaker_name name the most recently used model: a fine-tuned voice that
    a batch is using now, not the Base model a voice clone used before the batch started."""
    service = await make_service(gpu_max_models=2, inference_max_batch=1)
    await kit.add_voice(service, tiny_models, job_id="hero", preload=True)
    clone = {
        "text": "Hi.",
        "ref_audio_url": base64.b64encode(kit.reference_wav()).decode(),
        "ref_text": "Hello.",
        "upload_to_s3": False,
    }
    items = [{"text": f"Line {i} of the chapter.", "filename": f"l{i}.wav"} for i in range(6)]
    async with kit.http_client(service) as client:
        assert (await client.post("/voice-clone", json=clone)).status_code == 200
        batch = asyncio.create_task(client.post("/infer/hero/batch", json={"items": items}))
        deadline = time.monotonic() + 60
        while True:
            status = (await client.get("/gpu/status")).json()
            hero = [m for m in status["loaded_models"] if m["key"] == "voice:hero"]
            if hero and hero[0]["state"] == "loaded" and hero[0]["in_use"] > 0:
                break
            assert not batch.done() and time.monotonic() < deadline, "the batch never held the voice"
            await asyncio.sleep(0.01)
        assert (await batch).status_code == 200
        after = (await client.get("/gpu/status")).json()
    assert (status["loaded_checkpoint"], status["speaker_name"]) == (
        "jobs/hero/output/checkpoint-epoch-0",
        kit.speaker,
    )
    assert [m["key"] for m in status["loaded_models"]] == ["voice:hero", "base"]
    assert (after["loaded_checkpoint"], after["speaker_name"]) == (
        "jobs/hero/output/checkpoint-epoch-0",
        kit.speaker,
    )
