"""Waiting for a VRAM model slot is bounded: when every slot stays in use, the request gets a 503 with Retry-After."""

from __future__ import annotations


async def test_a_request_that_cannot_get_a_model_slot_is_503_with_retry_after(make_service, tiny_models, kit):
    service = await make_service(gpu_max_models=1, vram_wait_timeout=0.5)
    await kit.add_voice(service, tiny_models, job_id="held")
    held = service.catalog.loader.voice_spec(service.catalog.get("held"))
    async with service.cache.use(held), kit.http_client(service) as client:
        answer = await client.post("/voice-design", json={"text": "Hi.", "instruct": "calm"})
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "1"
    assert answer.json()["detail"] == (
        "all 1 model slots (GPU_MAX_MODELS) stayed in use for 0.5 s: retry later"
    )
    async with kit.http_client(service) as client:  # the slot is free again: the same request works
        again = await client.post("/voice-design", json={"text": "Hi.", "instruct": "calm"})
    assert again.status_code == 200, again.text
