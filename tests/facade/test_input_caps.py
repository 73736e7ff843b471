"""Bounded input on a real `vft serve`: JSON bodies over VFT_MAX_JSON_BYTES are a 413 before parsing, free text
fields have maximum lengths and ids are key-safe (422 naming the field)."""

from __future__ import annotations

import json

import pytest

LIMIT = 1024 * 1024
FINETUNE = {"dataset_s3_key": "datasets/x.zip", "speaker_name": "Hero"}
LONG = "a" * 5000

# (path, body, the field the 422 names)
TOO_LONG = [
    ("/voice-design", {"text": "Hi.", "instruct": LONG}, "instruct"),
    ("/voice-design", {"text": "Hi.", "instruct": "warm", "language": LONG}, "language"),
    ("/voice-design", {"text": "Hi.", "instruct": "warm", "s3_filename": LONG}, "s3_filename"),
    ("/voice-clone", {"text": "Hi.", "ref_audio_url": "http://x/a.wav", "ref_text": LONG}, "ref_text"),
    ("/infer/nojob", {"text": "Hi.", "instruct": LONG}, "instruct"),
    ("/finetune", {**FINETUNE, "book_id": LONG}, "book_id"),
    ("/finetune", {**FINETUNE, "book_id": "../other"}, "book_id"),
    ("/finetune", {**FINETUNE, "chapter_id": "a/b"}, "chapter_id"),
    ("/finetune", {**FINETUNE, "character_id": LONG}, "character_id"),
    ("/finetune", {**FINETUNE, "speaker_name": "H" + LONG}, "speaker_name"),
    ("/finetune", {**FINETUNE, "resume_job_id": "../../etc"}, "resume_job_id"),
    ("/finetune", {**FINETUNE, "resume_job_id": LONG}, "resume_job_id"),
    ("/finetune", {**FINETUNE, "language": LONG}, "language"),
    (
        "/voice-clone/batch",
        {"ref_audio_url": "http://x/a.wav", "items": [{"text": "Hi."}] * 33, "upload_to_s3": False},
        "items",
    ),
]


@pytest.mark.parametrize(("path", "body", "field"), TOO_LONG)
def test_overlong_or_unsafe_fields_are_422_naming_the_field(served, path, body, field):
    with served.client() as client:
        response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"{field}:"), response.json()["detail"]


@pytest.mark.parametrize("path", ["/finetune", "/voice-design", "/infer/nojob", "/voices/x"])
def test_json_over_the_cap_is_413(served, path):
    body = json.dumps({"text": "a" * LIMIT}).encode()
    with served.client() as client:
        declared = client.post(path, content=body, headers={"Content-Type": "application/json"})
        chunked = client.post(
            path, content=iter([body[:1000], body[1000:]]), headers={"Content-Type": "application/json"}
        )
    for response in (declared, chunked):
        assert response.status_code == 413, response.text
        assert response.json() == {"detail": f"the request body (JSON) exceeds the limit of {LIMIT} bytes"}


def test_json_under_the_cap_is_parsed_as_before(served):
    body = json.dumps({"text": "Hi.", "instruct": "warm", "pad": "a" * (LIMIT - 100)}).encode()
    with served.client() as client:
        response = client.post("/voice-design", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
