"""A chapter survives a SIGKILL of `vft serve`: after the restart its status shows the segments already done, and it
completes without rendering them again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.chapters.chapter_helpers import (
    Receiver,
    chapter_server,
    receiver,  # noqa: F401 - a fixture
    sentences,
    wait_synthesis,
)
from tests.helpers.servers import Server
from tests.inference.openai_api.openai_helpers import add_voice
from voicefinetune.storage import Storage

NARRATOR = "narrator2"


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3_endpoint, tiny_models, receiver: Receiver) -> Iterator[Server]:  # noqa: F811
    served = chapter_server(tmp_path_factory.mktemp("resume"), s3_endpoint, tiny_models.root, receiver)
    add_voice(served, tiny_models, NARRATOR)
    yield served
    served.stop()


def segment_objects(storage: Storage, synthesis_id: str) -> dict[str, tuple[str, float]]:
    """Each stored segment's key: (ETag, last modified)."""
    listed = storage.client.list_objects_v2(
        Bucket=storage.bucket, Prefix=f"synthesis/{synthesis_id}/segments/"
    )
    return {o["Key"]: (o["ETag"], o["LastModified"].timestamp()) for o in listed.get("Contents", [])}


def test_a_chapter_killed_midway_resumes_after_restart_without_redoing_done_segments(
    server: Server,
    receiver: Receiver,  # noqa: F811
):
    lines = sentences(40)
    response = httpx.post(
        f"{server.url}/synthesis",
        json={
            "text": " ".join(lines),
            "voice": NARRATOR,
            "book_id": "book-2",
            "chapter_id": "ch-07",
            "webhook_url": receiver.url,
        },
        timeout=60,
    )
    assert response.status_code == 202, response.text
    synthesis_id = response.json()["synthesis_id"]
    storage = Storage(server.settings)

    deadline = time.monotonic() + 120
    done: dict = {}
    while time.monotonic() < deadline:
        done = {k: v for k, v in segment_objects(storage, synthesis_id).items() if k.endswith(".json")}
        if len(done) >= 4:
            break
        time.sleep(0.02)
    server.kill()  # SIGKILL: no shutdown, no chance to save anything more
    kept = segment_objects(storage, synthesis_id)
    done_at_kill = {k for k in kept if k.endswith(".json")}
    assert 4 <= len(done_at_kill) < 40, "the chapter should be cut midway"

    server.start()
    status = httpx.get(f"{server.url}/synthesis/{synthesis_id}", timeout=30).json()
    assert status["status"] in ("queued", "running", "succeeded")
    assert status["progress"]["total_segments"] == 40
    assert status["progress"]["done_segments"] >= len(done_at_kill)

    finished = wait_synthesis(server, synthesis_id)
    assert finished["status"] == "succeeded", finished
    after = segment_objects(storage, synthesis_id)
    for (
        key
    ) in done_at_kill:  # the audio and record of every segment done before the kill were not written again
        wav = key.removesuffix(".json") + ".wav"
        assert after[key] == kept[key]
        assert after[wav] == kept[wav]
    manifest_key = finished["output"]["manifest_s3_key"]
    assert manifest_key == "audio/segments/book-2/ch-07/ch-07.manifest.json"
    manifest = json.loads(storage.read_bytes(manifest_key))
    assert [s["text"] for s in manifest["segments"]] == lines
    assert receiver.wait_for(synthesis_id)[0]
