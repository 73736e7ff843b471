"""A genuine internal failure is a 500 whose body names an error id, never the exception text (that is logged)."""

from __future__ import annotations

import json
import logging
import re

import httpx
from voicefinetune_inference import create_app

from tests.helpers.servers import ServerThread

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


def test_an_unhandled_error_on_an_openai_route_is_a_500_in_openais_shape_with_an_error_id(
    settings, storage, caplog
):
    # A voice record corrupted on disk (its checkpoint path a number): listing the voices fails inside the server.
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "voices.json").write_text(
        json.dumps({"hero": {"speaker_name": "hero", "checkpoint_path": 7}}), encoding="utf-8"
    )
    server = ServerThread(create_app(settings)).start()
    try:
        with caplog.at_level(logging.ERROR):  # a connection each: the server closes one after a 500
            openai = httpx.get(f"{server.url}/v1/audio/voices", timeout=30)
            original = httpx.get(f"{server.url}/voices", timeout=30)
    finally:
        server.stop()
    assert openai.status_code == 500
    error = openai.json()["error"]
    assert error == {"message": error["message"], "type": "server_error", "param": None, "code": None}
    match = ERROR_ID.search(error["message"])
    assert match, error
    assert error["message"] == (
        f"internal error while handling GET /v1/audio/voices (error id {match.group(1)}; details are in the "
        "server log)"
    )
    logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert original.status_code == 500
    assert ERROR_ID.search(original.json()["detail"]) and set(original.json()) == {"detail"}
