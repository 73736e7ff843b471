"""DELETE /voices/{id} (what the operator calls on every replica when a VoiceFinetune is deleted, and what `vft
serve` does for DELETE /jobs/{id}) while a batch in that voice runs: the batch stops with a 404 saying the job was
deleted, nothing is uploaded after the DELETE answered, the model is unloaded and never loaded (nor restored) again."""

from __future__ import annotations

import asyncio
import time

import pytest

pytestmark = pytest.mark.timeout(300)  # model loads and a 30-item batch on a shared CPU
ITEMS = 30


async def test_unregistering_a_voice_stops_its_batch_and_unloads_it(make_service, tiny_models, kit):
    service = await make_service(
        inference_max_batch=1
    )  # one item per model call: the batch runs item by item
    folder = await kit.add_voice(service, tiny_models, job_id="hero", backed_up=True)
    items = [{"text": f"Line {i} of a long chapter.", "filename": f"line_{i:03d}.wav"} for i in range(ITEMS)]

    def uploaded() -> list[str]:
        return sorted(obj.key for obj in service.storage.list("audio/hero/"))

    async with kit.http_client(service) as client:
        batch = asyncio.create_task(client.post("/infer/hero/batch", json={"items": items}))
        deadline = time.monotonic() + 120
        while not await asyncio.to_thread(uploaded):
            assert not batch.done() and time.monotonic() < deadline, "no item of the batch was uploaded"
            await asyncio.sleep(0.02)
        deleted = await client.delete("/voices/hero")
        uploaded_when_deleted = await asyncio.to_thread(uploaded)
        gone_when_deleted = not folder.exists()  # S3 holds the model: the local copy went with the voice
        answer = await batch
        again = await client.post("/infer/hero", json={"text": "Gone?", "upload_to_s3": False})

    assert deleted.status_code == 200 and deleted.json() == {"job_id": "hero", "unregistered": True}
    assert answer.status_code == 404, answer.text[:300]
    assert answer.json() == {
        "detail": "job 'hero' was deleted: its voice is no longer served, and this request was stopped"
    }
    assert 0 < len(uploaded_when_deleted) < ITEMS
    assert await asyncio.to_thread(uploaded) == uploaded_when_deleted
    assert again.status_code == 404
    assert service.cache.describe() == [] and service.cache.total_loads == service.cache.total_unloads
    assert gone_when_deleted and not folder.exists()  # and nothing restored it from S3 afterwards


async def test_unregistering_deletes_a_model_folder_that_s3_holds_and_keeps_one_only_this_disk_has(
    make_service, tiny_models, kit
):
    """A replica's copy of a checkpoint (restorable from S3) goes with the voice; a checkpoint only this disk holds
    (e.g. made by `vft train` without S3) is never deleted by unregistering it."""
    service = await make_service()
    copy = await kit.add_voice(service, tiny_models, job_id="replica-copy", backed_up=True)
    only = await kit.add_voice(service, tiny_models, job_id="only-here", backed_up=False)
    async with kit.http_client(service) as client:
        first = await client.delete("/voices/replica-copy")
        second = await client.delete("/voices/only-here")
    assert (first.status_code, second.status_code) == (200, 200)
    assert not copy.exists()
    assert (only / "config.json").is_file()
