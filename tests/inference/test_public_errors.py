"""A voice that cannot load is answered with its checkpoint folder relative to the data folder, never the
server's absolute path."""

from __future__ import annotations

import shutil


async def test_a_checkpoint_gone_from_disk_and_s3_is_named_relative_to_the_data_folder(
    make_service, kit, tiny_models
):
    service = await make_service()
    folder = kit.install_checkpoint(service, tiny_models, job_id="gone")
    await service.catalog.register("gone", kit.speaker, checkpoint_path=str(folder))
    shutil.rmtree(folder)  # deleted behind the server's back, and S3 never had a copy
    async with kit.http_client(service) as client:
        answer = await client.post("/infer/gone", json={"text": "Hello there.", "upload_to_s3": False})
    assert answer.status_code == 409, answer.text
    assert answer.json() == {
        "detail": "job 'gone' is not ready: its checkpoint jobs/gone/output/checkpoint-epoch-0 is not on disk and S3 "
        f"has no copy (nothing stored under s3://{service.settings.s3_bucket}/checkpoints/gone/)"
    }
