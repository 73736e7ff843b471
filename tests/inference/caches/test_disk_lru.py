"""The disk LRU over the jobs folder: only S3-backed model folders go, least recently used first; they come back."""

from __future__ import annotations

import pytest
from voicefinetune_inference.caches.disk_cache import folder_bytes

from voicefinetune.checkpoints import has_model
from voicefinetune.schemas import InvalidInput


async def test_tiny_threshold_deletes_only_s3_backed_models_and_they_come_back(
    make_service, tiny_models, kit
):
    service = await make_service()
    backed = await kit.add_voice(service, tiny_models, job_id="backed")
    local = await kit.add_voice(service, tiny_models, job_id="local", backed_up=False)
    # registered with an S3 prefix that S3 does not (fully) hold: must survive as well
    unverified = kit.install_checkpoint(service, tiny_models, job_id="unverified")
    service.storage.upload_bytes(b"partial", "checkpoints/unverified/config.json")
    await service.catalog.register(
        "unverified", kit.speaker, checkpoint_path=str(unverified), s3_prefix="checkpoints/unverified"
    )
    # a model outside the job's own folder cannot be registered (so the LRU never reaches it)
    with pytest.raises(InvalidInput):
        await service.catalog.register(
            "outside",
            kit.speaker,
            checkpoint_path=str(tiny_models.custom_voice),
            s3_prefix="checkpoints/outside",
        )

    async with kit.http_client(service) as client:
        answer = await client.get("/gpu/cleanup", params={"threshold_gb": 0.000001})
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert [d["job_id"] for d in report["deleted"]] == ["backed"]
        kept = {k["job_id"]: k["reason"] for k in report["kept"]}
        assert "local only" in kept["local"] and "does not hold" in kept["unverified"]
        assert "outside" not in kept
        assert report["used_gb"] < report["used_gb_before"]
        assert not backed.exists() and has_model(local) and has_model(unverified)
        assert has_model(tiny_models.custom_voice)

        # the deleted voice answers its next request (restored from S3), the local-only one still works
        again = await client.post("/infer/backed", json={"text": "Back from S3.", "upload_to_s3": False})
        assert again.status_code == 200, again.text
        assert has_model(backed)
        assert (
            await client.post("/infer/local", json={"text": "Still here.", "upload_to_s3": False})
        ).status_code == 200
        voices = {v["job_id"]: v for v in (await client.get("/voices")).json()}
        assert voices["backed"]["on_disk"] is True and voices["backed"]["loaded"] is True


async def test_least_recently_used_goes_first_and_only_as_much_as_needed(make_service, tiny_models, kit):
    service = await make_service()
    folders = {
        job_id: await kit.add_voice(service, tiny_models, job_id=job_id)
        for job_id in ("first", "second", "third")
    }
    async with kit.http_client(service) as client:
        assert (
            await client.post("/infer/first", json={"text": "Hi.", "upload_to_s3": False})
        ).status_code == 200
        size = folder_bytes(folders["first"])
        used = service.disk.usage_bytes()
        # room for all but one model: exactly one goes, the least recently used ("second": "first" was just used)
        threshold_gb = (used - size / 2) / 1e9
        report = (await client.get("/gpu/cleanup", params={"threshold_gb": threshold_gb})).json()
        assert [d["job_id"] for d in report["deleted"]] == ["second"]
        assert folders["first"].exists() and folders["third"].exists() and not folders["second"].exists()
        # under the threshold nothing more happens
        assert (await client.get("/gpu/cleanup", params={"threshold_gb": threshold_gb})).json()[
            "deleted"
        ] == []
        assert (await client.get("/gpu/cleanup", params={"threshold_gb": -1})).status_code == 422


async def test_default_threshold_and_prune_after_training(make_service, tiny_models, kit):
    service = await make_service(disk_cache_gb=0.000001)
    folder = await kit.add_voice(service, tiny_models, job_id="trained")
    report = await service.disk_keeper.prune_disk()  # what the local backend calls after each training
    assert [d["job_id"] for d in report["deleted"]] == ["trained"] and not folder.exists()
    assert report["threshold_gb"] == 0.000001


async def test_voice_registered_by_s3_prefix_only_is_downloaded(make_service, tiny_models, kit, storage):
    service = await make_service()
    storage.upload_dir(tiny_models.custom_voice, "checkpoints/remote")
    async with kit.http_client(service) as client:
        registered = await client.post(
            "/voices/remote",
            json={"speaker_name": kit.speaker, "s3_prefix": "checkpoints/remote", "preload": True},
        )
        assert registered.status_code == 200, registered.text
        info = registered.json()
        assert info["on_disk"] is True and info["loaded"] is True
        assert info["local_path"].endswith("jobs/remote/checkpoint")
        assert (
            await client.post("/infer/remote", json={"text": "Hello.", "upload_to_s3": False})
        ).status_code == 200


async def test_a_copy_at_the_conventional_prefix_counts_and_empty_job_folders_go(
    make_service, tiny_models, kit
):
    service = await make_service()
    folder = kit.install_checkpoint(service, tiny_models, job_id="plain")
    service.storage.upload_dir(folder, "checkpoints/plain")  # where the trainer uploads; not registered
    await service.catalog.register("plain", kit.speaker, checkpoint_path=str(folder))
    report = await service.disk_keeper.prune_disk(threshold_gb=0)
    assert [d["job_id"] for d in report["deleted"]] == ["plain"]
    assert not service.settings.job_dir("plain").exists()  # nothing else was in it
    async with kit.http_client(service) as client:
        assert (
            await client.post("/infer/plain", json={"text": "Hi.", "upload_to_s3": False})
        ).status_code == 200
    assert has_model(folder)
