"""LoRA voices through the inference server: one resident base model, adapters attached per row, no model loads
when voices switch; full voices alongside them."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np

from voicefinetune.storage import checkpoint_prefix

TEXTS = ("The narrator begins.", "The hero answers at once.", "And the villain laughs.")


async def add_lora_voice(service, voice, *, job_id: str, preload: bool = False) -> dict:
    """A trained LoRA voice where the trainer leaves it, backed up to S3, registered."""
    folder = service.settings.job_dir(job_id) / "output" / "checkpoint-epoch-1"
    shutil.copytree(voice.folder, folder)
    service.storage.upload_dir(folder, checkpoint_prefix(job_id))
    return await service.catalog.register(
        job_id,
        voice.speaker,
        checkpoint_path=str(folder),
        s3_prefix=checkpoint_prefix(job_id),
        preload=preload,
    )


async def test_nine_requests_across_three_lora_voices_load_one_model_then_a_full_voice_works(
    make_service, tiny_models, lora_voices, kit
):
    service = await make_service(gpu_max_models=1)
    jobs = [f"cast-{voice.speaker.lower()}" for voice in lora_voices]
    for job_id, voice in zip(jobs, lora_voices, strict=True):
        await add_lora_voice(service, voice, job_id=job_id)
    await kit.add_voice(service, tiny_models, job_id="full-voice")
    async with kit.http_client(service) as client:
        answers = await asyncio.gather(
            *(
                client.post(f"/infer/{jobs[i % 3]}", json={"text": TEXTS[i % 3], "upload_to_s3": False})
                for i in range(9)
            )
        )
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == "audio/wav"
            audio, rate = kit.read_wav(answer.content)
            assert rate == 24000 and audio.size > 0 and np.isfinite(audio).all()
        assert service.cache.total_loads == 1  # the base model, once: switching voices loads nothing

        status = (await client.get("/gpu/status")).json()
        (base,) = status["loaded_models"]
        assert (base["key"], base["kind"], base["checkpoint"]) == ("base", "base", str(tiny_models.base))
        assert sorted(adapter["key"].split("@")[0] for adapter in base["adapters"]) == sorted(
            f"voice:{job_id}" for job_id in jobs
        )
        assert {adapter["rank"] for adapter in base["adapters"]} == {2}
        assert (status["max_models"], status["max_adapters"]) == (1, 64)

        full = await client.post("/infer/full-voice", json={"text": "Still here.", "upload_to_s3": False})
        assert full.status_code == 200, full.text
        assert kit.read_wav(full.content)[0].size > 0
        assert service.cache.total_loads == 2  # the full voice took the one slot from the base model


async def test_voice_strength_is_checked_and_a_weaker_voice_speaks(make_service, lora_voices, kit):
    service = await make_service()
    await add_lora_voice(service, lora_voices[0], job_id="narrator")
    async with kit.http_client(service) as client:
        too_strong = await client.post("/infer/narrator", json={"text": "Hi.", "voice_strength": 2.5})
        assert too_strong.status_code == 422
        (error,) = too_strong.json()["detail"]  # FastAPI's own 422 (this app has no readable-error handler)
        assert (error["loc"], error["msg"]) == (
            ["body", "voice_strength"],
            "Input should be less than or equal to 2",
        )
        body = {"text": TEXTS[0], "upload_to_s3": False}
        assert (await client.post("/infer/narrator", json={**body, "voice_strength": 0.5})).status_code == 200


async def test_a_lora_voice_deleted_from_disk_is_restored_from_s3(make_service, lora_voices, kit):
    service = await make_service()
    await add_lora_voice(service, lora_voices[1], job_id="hero")
    folder = service.settings.job_dir("hero") / "output" / "checkpoint-epoch-1"
    shutil.rmtree(folder)
    async with kit.http_client(service) as client:
        answer = await client.post("/infer/hero", json={"text": TEXTS[1], "upload_to_s3": False})
        assert answer.status_code == 200, answer.text
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in lora_voices[1].folder.iterdir())


async def test_preload_attaches_and_unregister_detaches(make_service, lora_voices, kit):
    service = await make_service()
    described = await add_lora_voice(service, lora_voices[2], job_id="villain", preload=True)
    assert described["loaded"] is True
    assert service.cache.total_loads == 1
    async with kit.http_client(service) as client:
        (base,) = (await client.get("/gpu/status")).json()["loaded_models"]
        assert [adapter["key"].split("@")[0] for adapter in base["adapters"]] == ["voice:villain"]
        assert await service.catalog.unregister("villain")
        (base,) = (await client.get("/gpu/status")).json()["loaded_models"]
        assert base["adapters"] == []


async def test_the_openai_speech_route_speaks_a_lora_voice_with_its_strength(make_service, lora_voices, kit):
    service = await make_service()
    await add_lora_voice(service, lora_voices[0], job_id="narrator")
    body = {"model": "qwen3-tts", "input": TEXTS[0], "voice": "narrator", "response_format": "wav"}
    async with kit.http_client(service) as client:
        answer = await client.post("/v1/audio/speech", json={**body, "voice_strength": 0.4})
        assert answer.status_code == 200, answer.text
        audio, rate = kit.read_wav(answer.content)
        assert rate == 24000 and audio.size > 0
        refused = await client.post("/v1/audio/speech", json={**body, "voice_strength": -1})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "voice_strength"
    (base,) = service.cache.describe()
    assert base["key"] == "base"  # the LoRA voice ran on the Base model: no model of its own
