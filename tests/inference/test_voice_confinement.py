"""POST /voices/{job_id} only reaches the job's own folder and S3 prefix; a restore never deletes what it did not make."""

from __future__ import annotations

import pytest

from voicefinetune.storage import checkpoint_prefix

OUTSIDE = [
    ("checkpoint_path", "/etc"),
    ("checkpoint_path", "ABSOLUTE_VICTIM"),
    ("checkpoint_path", "jobs/victim/output/checkpoint-epoch-0"),
    ("checkpoint_path", "jobs/attacker/../victim/output/checkpoint-epoch-0"),
    ("checkpoint_path", "jobs/attacker"),
    ("checkpoint_path", "audio/attacker"),
    ("checkpoint_path", "state"),
    ("s3_prefix", "checkpoints/victim"),
    ("s3_prefix", "checkpoints/attacker-2"),
    ("s3_prefix", "audio/attacker"),
    ("s3_prefix", "checkpoints/attacker/../victim"),
    ("s3_prefix", ""),
]


def snapshot(root) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("field", "value"), OUTSIDE)
async def test_registration_outside_the_jobs_own_folder_is_a_400(
    make_service, tiny_models, kit, field, value
):
    service = await make_service()
    victim = kit.install_checkpoint(service, tiny_models, job_id="victim")
    service.storage.upload_dir(victim, checkpoint_prefix("victim"))
    if value == "ABSOLUTE_VICTIM":
        value = str(victim)
    body = {"speaker_name": kit.speaker, "preload": True, field: value}
    if field == "s3_prefix" and value == "":
        body = {"speaker_name": kit.speaker, field: "/"}
    before_disk = snapshot(service.settings.data_dir / "jobs")
    before_s3 = sorted(obj.key for obj in service.storage.list(""))
    async with kit.http_client(service) as client:
        answer = await client.post("/voices/attacker", json=body)
        pruned = await client.get("/gpu/cleanup", params={"threshold_gb": 0})
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["detail"]
    assert pruned.status_code == 200
    assert service.catalog.all() == []
    assert snapshot(service.settings.data_dir / "jobs") == before_disk
    assert sorted(obj.key for obj in service.storage.list("")) == before_s3


async def test_own_folder_and_prefix_are_accepted(make_service, tiny_models, kit):
    service = await make_service()
    folder = kit.install_checkpoint(service, tiny_models, job_id="mine")
    relative = folder.relative_to(service.settings.data_dir).as_posix()
    async with kit.http_client(service) as client:
        answer = await client.post(
            "/voices/mine",
            json={"speaker_name": kit.speaker, "checkpoint_path": relative, "s3_prefix": "checkpoints/mine/"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["s3_prefix"] == "checkpoints/mine"


async def test_restore_never_deletes_a_folder_it_did_not_create(make_service, tiny_models, kit):
    """The model folder exists (someone's files, no model marker): the S3 restore refuses instead of wiping it."""
    service = await make_service()
    folder = kit.install_checkpoint(service, tiny_models, job_id="held")
    service.storage.upload_dir(folder, checkpoint_prefix("held"))
    for child in folder.iterdir():
        child.unlink() if child.is_file() else None
    (folder / "notes.txt").write_text("keep me")
    relative = folder.relative_to(service.settings.data_dir).as_posix()
    async with kit.http_client(service) as client:
        answer = await client.post(
            "/voices/held",
            json={
                "speaker_name": kit.speaker,
                "checkpoint_path": relative,
                "s3_prefix": "checkpoints/held",
                "preload": True,
            },
        )
    assert answer.status_code == 409, answer.text
    assert "not replacing it" in answer.json()["detail"]
    assert (folder / "notes.txt").read_text() == "keep me"
    assert not [p for p in folder.parent.iterdir() if ".downloading-" in p.name]
