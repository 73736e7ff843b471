"""/infer and /infer/{job_id}/batch: outputs, keys, defaults, errors and the 20-item batch."""

from __future__ import annotations

import dataclasses

import httpx
from fastapi import HTTPException

from voicefinetune.schemas import SUPPORTED_LANGUAGES

S3_FIELDS = {"s3_url", "presigned_url", "s3_key", "sample_rate", "text", "job_id", "kept_existing", "note"}
ITEM_ERROR_FIELDS = {"index", "filename", "text", "error", "status_code"}


async def test_infer_uploads_to_s3_under_the_original_key(make_service, tiny_models, kit):
    service = await make_service()
    await kit.add_voice(service, tiny_models, job_id="hero")
    async with kit.http_client(service) as client:
        answer = await client.post(
            "/infer/hero",
            json={
                "text": "Hello, welcome to our audiobook.",
                "language": "English",
                "upload_to_s3": True,
                "book_id": "book_001",
                "chapter_id": "chapter_1",
                "s3_filename": "intro.wav",
            },
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == S3_FIELDS
        assert body["s3_key"] == "audio/segments/book_001/chapter_1/intro.wav"
        assert body["s3_url"] == f"{service.storage.endpoint}/{service.storage.bucket}/{body['s3_key']}"
        assert body["sample_rate"] == 24000
        assert body["text"] == "Hello, welcome to our audiobook."
        assert body["job_id"] == "hero"
        assert "X-Amz-Signature" in body["presigned_url"] and "X-Amz-Expires=86400" in body["presigned_url"]
        object_bytes = httpx.get(body["presigned_url"]).content
        audio, rate = kit.read_wav(object_bytes)
        assert rate == 24000 and audio.size > 0

        # default (storage configured, upload_to_s3 not given): uploads under audio/{job_id}/ with an auto name
        auto = (await client.post("/infer/hero", json={"text": "Second line."})).json()
        assert auto["s3_key"].startswith("audio/hero/") and auto["s3_key"].endswith(".wav")

        # upload_to_s3 false: the WAV itself
        wav = await client.post("/infer/hero", json={"text": "Give me the file.", "upload_to_s3": False})
        assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
        assert kit.read_wav(wav.content)[1] == 24000


async def test_overwrite_false_answers_with_the_existing_object(make_service, tiny_models, kit):
    service = await make_service()
    await kit.add_voice(service, tiny_models, job_id="hero")
    async with kit.http_client(service) as client:
        first = (await client.post("/infer/hero", json={"text": "Once.", "s3_filename": "once.wav"})).json()
        generated = service.generator.generated
        stamp = service.storage.head(first["s3_key"]).last_modified
        again = await client.post(
            "/infer/hero", json={"text": "Once.", "s3_filename": "once.wav", "overwrite": False}
        )
        assert again.status_code == 200 and again.json()["s3_key"] == first["s3_key"]
        assert first["kept_existing"] is False and again.json()["kept_existing"] is True
        assert service.generator.generated == generated
        assert service.storage.head(first["s3_key"]).last_modified == stamp


async def test_without_storage_the_wav_comes_back_and_upload_is_503(make_service, tiny_models, kit):
    service = await make_service(s3_access_key=None, s3_secret_key=None)
    folder = kit.install_checkpoint(service, tiny_models, job_id="local")
    await service.catalog.register("local", kit.speaker, checkpoint_path=str(folder))
    async with kit.http_client(service) as client:
        wav = await client.post(
            "/infer/local", json={"text": "Hello, welcome to our audiobook.", "language": "English"}
        )
        assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
        audio, rate = kit.read_wav(wav.content)
        assert rate == 24000 and audio.size > 2400
        refused = await client.post("/infer/local", json={"text": "Upload me.", "upload_to_s3": True})
        assert refused.status_code == 503 and "E2E_ACCESS_KEY" in refused.json()["detail"]
        batch = await client.post("/infer/local/batch", json={"items": [{"text": "x", "filename": "a.wav"}]})
        assert batch.status_code == 503


async def test_errors_have_the_original_status_and_a_message(make_service, tiny_models, kit):
    service = await make_service()
    await kit.add_voice(service, tiny_models, job_id="hero")

    async def gate(job_id: str) -> None:
        if job_id == "training":
            raise HTTPException(409, "job training is not ready: it is still training")

    async with kit.http_client(service, job_gate=gate) as client:
        missing = await client.post("/infer/nobody", json={"text": "Hi."})
        assert missing.status_code == 404 and "nobody" in missing.json()["detail"]
        busy = await client.post("/infer/training", json={"text": "Hi."})
        assert busy.status_code == 409 and "not ready" in busy.json()["detail"]
        empty = await client.post("/infer/hero", json={"text": "   "})
        assert empty.status_code == 400 and "empty" in empty.json()["detail"]
        long = await client.post("/infer/hero", json={"text": "x" * (service.settings.max_text_chars + 1)})
        assert long.status_code == 400 and "limit" in long.json()["detail"]
        klingon = await client.post("/infer/hero", json={"text": "Hi.", "language": "Klingon"})
        assert klingon.status_code == 400
        assert all(language in klingon.json()["detail"] for language in SUPPORTED_LANGUAGES)
        unsafe = await client.post("/infer/hero", json={"text": "Hi.", "s3_filename": "../../etc/passwd"})
        assert unsafe.status_code == 400 and "filename" in unsafe.json()["detail"]
        unsafe_book = await client.post(
            "/infer/hero", json={"text": "Hi.", "book_id": "../x", "s3_filename": "a.wav"}
        )
        assert unsafe_book.status_code == 422 and "book_id" in str(
            unsafe_book.json()["detail"]
        )  # ids are key-safe
        schema = await client.post("/infer/hero", json={"language": "English"})
        assert schema.status_code == 422
    assert service.activity.total_requests == 0  # nothing above reached a model


async def test_missing_checkpoint_without_s3_copy_is_409(make_service, tiny_models, kit):
    service = await make_service()
    folder = kit.install_checkpoint(service, tiny_models, job_id="gone")
    await service.catalog.register("gone", kit.speaker, checkpoint_path=str(folder))
    import shutil

    shutil.rmtree(folder)
    async with kit.http_client(service) as client:
        answer = await client.post("/infer/gone", json={"text": "Hi.", "upload_to_s3": False})
        assert answer.status_code == 409 and "not on disk" in answer.json()["detail"]


async def test_batch_of_20_reports_two_bad_items_in_place(make_service, tiny_models, kit):
    # the batcher's fused calls (the continuous loop has none)
    service = await make_service(scheduler="batch")
    await kit.add_voice(service, tiny_models, job_id="narrator")
    items = [{"text": f"Line number {i} of the chapter.", "filename": f"ch1_{i:03d}.wav"} for i in range(20)]
    items[7]["text"] = ""
    items[12]["filename"] = "../../etc/passwd"
    async with kit.http_client(service) as client:
        answer = await client.post(
            "/infer/narrator/batch",
            json={"items": items, "language": "English", "book_id": "book_9", "chapter_id": "ch1"},
        )
    assert answer.status_code == 200, answer.text
    results = answer.json()
    assert len(results) == 20
    errors = [i for i, r in enumerate(results) if "error" in r]
    assert errors == [7, 12]
    for index in errors:
        assert set(results[index]) == ITEM_ERROR_FIELDS
        assert results[index]["index"] == index and results[index]["status_code"] == 400
    assert "empty" in results[7]["error"] and "filename" in results[12]["error"]
    for index, result in enumerate(results):
        if index in errors:
            continue
        assert set(result) == S3_FIELDS
        assert result["s3_key"] == f"audio/segments/book_9/ch1/ch1_{index:03d}.wav"
        assert result["text"] == items[index]["text"] and result["job_id"] == "narrator"
        assert service.storage.exists(result["s3_key"])
    assert not any(obj.key.endswith("passwd") for obj in service.storage.list("audio/"))
    # 18 items generated in fused calls, never more than the cap per call
    assert service.batcher.items == 18
    assert (
        service.batcher.calls < 18 and service.batcher.largest_batch <= service.settings.inference_max_batch
    )


async def test_batch_item_language_and_duplicate_filenames(make_service, tiny_models, kit):
    service = await make_service()
    await kit.add_voice(service, tiny_models, job_id="narrator")
    items = [
        {"text": "Bonjour.", "filename": "a.wav", "language": "French"},
        {"text": "Hallo.", "filename": "b.wav", "language": "Elvish"},
        {"text": "Again.", "filename": "a.wav"},
    ]
    async with kit.http_client(service) as client:
        results = (await client.post("/infer/narrator/batch", json={"items": items})).json()
    assert results[0]["s3_key"] == "audio/narrator/a.wav"
    assert results[1]["index"] == 1 and "Elvish" in results[1]["error"]
    assert results[2]["index"] == 2 and "already used by item 0" in results[2]["error"]


def test_settings_copy_is_independent(settings):
    assert dataclasses.replace(settings, gpu_max_models=2).gpu_max_models == 2
