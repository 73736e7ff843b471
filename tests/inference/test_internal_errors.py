"""A genuine internal failure is a 500 whose body names an error id, never the exception text (that is logged)."""

from __future__ import annotations

import logging
import re

ERROR_ID = re.compile(r"error id ([0-9a-f]{12})")


async def test_a_broken_checkpoint_is_a_500_with_an_error_id(make_service, tiny_models, kit, caplog):
    service = await make_service()
    folder = kit.install_checkpoint(service, tiny_models, job_id="broken")
    (folder / "model.safetensors").write_bytes(b"SECRET-INTERNAL-DETAIL not a safetensors file")
    relative = folder.relative_to(service.settings.data_dir).as_posix()
    with caplog.at_level(logging.ERROR):
        async with kit.http_client(service) as client:
            answer = await client.post(
                "/voices/broken",
                json={"speaker_name": kit.speaker, "checkpoint_path": relative, "preload": True},
            )
    assert answer.status_code == 500
    detail = answer.json()["detail"]
    match = ERROR_ID.search(detail)
    assert match, detail
    assert str(folder) not in detail and "safetensors" not in detail.lower() and "Error" not in detail
    logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
    assert logged and logged[0].exc_info is not None
