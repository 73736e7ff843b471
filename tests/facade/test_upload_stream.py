"""Multipart dataset uploads stream into the uploads folder with VFT_MAX_UPLOAD_BYTES enforced while streaming."""

from __future__ import annotations

import uuid
from pathlib import Path

CAP = 600_000


def multipart(fields: dict[str, str], filename: str, payload: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="dataset"; filename="{filename}"\r\n'
        "Content-Type: application/zip\r\n\r\n".encode()
        + payload
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def leftovers(server) -> list[Path]:
    uploads = Path(server.env["VFT_DATA_DIR"]) / "uploads"
    return sorted(uploads.iterdir()) if uploads.is_dir() else []


def test_an_upload_over_the_cap_is_413_while_streaming(served_small_upload_cap):
    body, content_type = multipart({"speaker_name": "Hero"}, "big.zip", b"\0" * (CAP + 10))
    with served_small_upload_cap.client() as client:
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))  # chunked: no Content-Length
        streamed = client.post("/finetune", content=chunks, headers={"Content-Type": content_type})
        declared = client.post("/finetune", content=body, headers={"Content-Type": content_type})
        jobs = client.get("/jobs").json()
    assert streamed.status_code == 413, streamed.text
    assert "VFT_MAX_UPLOAD_BYTES" in streamed.json()["detail"]
    assert declared.status_code == 413, declared.text
    assert jobs == []
    assert leftovers(served_small_upload_cap) == []


def test_an_upload_under_the_cap_is_accepted_and_refusals_leave_nothing(served_small_upload_cap, dataset_zip):
    payload = dataset_zip.read_bytes()
    assert len(payload) < CAP
    body, content_type = multipart({"speaker_name": "Hero", "num_epochs": "1"}, "voice.zip", payload)
    bad, bad_type = multipart({"speaker_name": "Hero_1"}, "voice.zip", payload)
    empty, empty_type = multipart({"speaker_name": "Hero"}, "voice.zip", b"")
    with served_small_upload_cap.client() as client:
        refused = client.post("/finetune", content=bad, headers={"Content-Type": bad_type})
        nothing = client.post("/finetune", content=empty, headers={"Content-Type": empty_type})
        assert leftovers(served_small_upload_cap) == []
        accepted = client.post("/finetune", content=body, headers={"Content-Type": content_type})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        assert [p.name for p in leftovers(served_small_upload_cap)] == [f"{job_id}.zip"]
        assert client.delete(f"/jobs/{job_id}").status_code == 200
    assert refused.status_code == 422 and refused.json()["detail"].startswith("speaker_name:")
    assert nothing.status_code == 400 and "empty" in nothing.json()["detail"]


def test_the_upload_is_never_spooled_by_the_generic_form_parser(settings, storage, dataset_zip, monkeypatch):
    """The generic parser copies a file part into a SpooledTemporaryFile (in /tmp above 1 MB) before the route sees
    it; the dataset upload must stream straight into the uploads folder instead."""
    from fastapi.testclient import TestClient
    from starlette.formparsers import MultiPartParser

    from voicefinetune.serve import create_local_app

    async def spooling(self):
        raise AssertionError("the upload went through Starlette's spooling form parser")

    monkeypatch.setattr(MultiPartParser, "parse", spooling)
    with TestClient(create_local_app(settings)) as http, open(dataset_zip, "rb") as handle:
        answer = http.post(
            "/finetune",
            data={"speaker_name": "Hero", "num_epochs": "1"},
            files={"dataset": ("voice.zip", handle)},
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job_id"]
        assert (settings.data_dir / "uploads" / f"{job_id}.zip").read_bytes() == dataset_zip.read_bytes()
        assert http.delete(f"/jobs/{job_id}").status_code == 200
