"""Fine-tune webhooks through a real `vft serve`: `webhook_url` on /finetune (multipart and JSON) hears a signed
event when the voice is ready; a private webhook URL is refused before any job exists."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.chapters.chapter_helpers import (
    SECRET,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Receiver,
    chapter_server,
    receiver,  # noqa: F401 - a fixture
)
from tests.helpers.servers import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3_endpoint, tiny_models, receiver: Receiver) -> Iterator[Server]:  # noqa: F811
    served = chapter_server(tmp_path_factory.mktemp("finetune-hook"), s3_endpoint, tiny_models.root, receiver)
    yield served
    served.stop()


def test_a_finetune_webhook_arrives_signed_when_the_voice_is_ready(
    server: Server,
    receiver: Receiver,  # noqa: F811
    dataset_zip,
):
    response = httpx.post(
        f"{server.url}/finetune",
        files={"dataset": dataset_zip.read_bytes()},
        data={"speaker_name": "Hooked", "num_epochs": "1", "webhook_url": receiver.url},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    job = server.wait_for(job_id, timeout=300)
    assert job["status"] == "ready", f"{job}\n{server.log_tail()}"

    body, headers = receiver.wait_for(job_id)
    assert (
        headers[SIGNATURE_HEADER.lower()]
        == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    )
    event = json.loads(body)
    assert {k: event[k] for k in ("type", "id", "status", "speaker_name", "error")} == {
        "type": "finetune",
        "id": job_id,
        "status": "ready",
        "speaker_name": "Hooked",
        "error": None,
    }
    assert headers[TIMESTAMP_HEADER.lower()] == str(event["timestamp"])


@pytest.mark.parametrize("form", [False, True])
def test_a_private_webhook_url_is_refused_and_no_job_is_created(server: Server, dataset_zip, form: bool):
    before = httpx.get(f"{server.url}/jobs", timeout=30).json()
    hook = "http://192.168.1.20:8080/hook"
    if form:
        response = httpx.post(
            f"{server.url}/finetune",
            files={"dataset": dataset_zip.read_bytes()},
            data={"speaker_name": "Refused", "webhook_url": hook},
            timeout=60,
        )
    else:
        response = httpx.post(
            f"{server.url}/finetune",
            json={
                "dataset_s3_key": "datasets/none/dataset.zip",
                "speaker_name": "Refused",
                "webhook_url": hook,
            },
            timeout=60,
        )
    assert response.status_code == 400
    assert response.json() == {
        "detail": "webhook_url host '192.168.1.20' resolves to 192.168.1.20, a private address: refused (give a "
        "public URL; to allow private hosts set VFT_ALLOW_PRIVATE_URLS=1 or list the origin in "
        "VFT_TRUSTED_URL_ORIGINS)"
    }
    assert httpx.get(f"{server.url}/jobs", timeout=30).json() == before
