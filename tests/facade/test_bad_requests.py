"""Bad requests get a 4xx with a message saying what to fix (the facade in-process, real moto S3)."""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers.servers import server_environment
from voicefinetune.serve import create_local_app
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage

DATASET_KEY = "datasets/Hero1/dataset.zip"


@pytest.fixture(scope="module")
def client(tmp_path_factory, s3_endpoint: str, tiny_models, dataset_zip: Path) -> Iterator[TestClient]:
    """One facade for the module (its tests leave no job behind), bound to its own bucket."""
    env = server_environment(
        tmp_path_factory.mktemp("bad-requests") / "data",
        s3_endpoint=s3_endpoint,
        bucket=f"vft-bad-{uuid.uuid4().hex[:10]}",
        tiny_root=tiny_models.root,
    )
    settings = Settings.from_env(env)
    storage = Storage(settings)
    storage.ensure_bucket()
    storage.upload_file(dataset_zip, DATASET_KEY)
    with TestClient(create_local_app(settings)) as http:
        yield http


def body(**changes) -> dict:
    return {"dataset_s3_key": DATASET_KEY, "speaker_name": "hero_voice", "num_epochs": 2, **changes}


@pytest.mark.parametrize(
    ("changes", "field", "hint"),
    [
        ({"speaker_name": "Hero_1"}, "speaker_name", "Hero1"),
        ({"num_epochs": 0}, "num_epochs", "greater than or equal to 1"),
        ({"num_epochs": -1}, "num_epochs", "greater than or equal to 1"),
        ({"batch_size": 0}, "batch_size", "greater than or equal to 1"),
        ({"lr": 0}, "lr", "greater than 0"),
        ({"lr": -1e-6}, "lr", "greater than 0"),
        ({"num_epochs": "ten"}, "num_epochs", "integer"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps", "greater than or equal to 1"),
        ({"language": "Klingon"}, "language", "unsupported language 'Klingon'"),
        ({"method": "dora"}, "method", "Input should be 'full' or 'lora'"),
        ({"lora_rank": 0}, "lora_rank", "greater than or equal to 1"),
        ({"lora_targets": ["lm_head"]}, "lora_targets", "q_proj, k_proj, v_proj, o_proj, gate_proj"),
    ],
)
def test_bad_json_fields_are_refused_with_the_field_named(client: TestClient, changes, field, hint) -> None:
    r = client.post("/finetune", json=body(**changes))
    assert r.status_code == 422, r.text
    assert field in r.json()["message"] and hint in r.json()["message"]
    assert (
        isinstance(r.json()["detail"], str) and field in r.json()["detail"]
    )  # readable, like every other error
    assert client.get("/jobs").json() == []


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"speaker_name": "Hero_1"}, "speaker_name"),
        ({"num_epochs": "0"}, "num_epochs"),
        ({"num_epochs": "-1"}, "num_epochs"),
        ({"batch_size": "0"}, "batch_size"),
        ({"lr": "0"}, "lr"),
        ({"lr": "-0.001"}, "lr"),
        ({"method": "dora"}, "method"),
        ({"lora_targets": "q_proj,lm_head"}, "lora_targets"),
    ],
)
def test_bad_form_fields_are_refused_like_json(client: TestClient, dataset_zip: Path, form, field) -> None:
    with open(dataset_zip, "rb") as handle:
        r = client.post("/finetune", files={"dataset": handle}, data=form)
    assert r.status_code == 422, r.text
    assert field in r.json()["message"]
    assert client.get("/jobs").json() == []


def test_a_multipart_method_other_than_full_or_lora_names_both(client: TestClient, dataset_zip: Path) -> None:
    with open(dataset_zip, "rb") as handle:
        r = client.post(
            "/finetune", files={"dataset": handle}, data={"speaker_name": "Hero", "method": "dora"}
        )
    assert r.status_code == 422, r.text
    assert "method" in r.json()["detail"] and "Input should be 'full' or 'lora'" in r.json()["detail"]


def test_missing_dataset_key_is_named(client: TestClient) -> None:
    r = client.post("/finetune", json=body(dataset_s3_key="datasets/nobody/missing.zip"))
    assert r.status_code == 400
    assert "datasets/nobody/missing.zip" in r.json()["detail"]


def test_unsafe_dataset_key_is_refused(client: TestClient) -> None:
    r = client.post("/finetune", json=body(dataset_s3_key="../etc/passwd"))
    assert 400 <= r.status_code < 500


def test_upload_that_is_not_a_dataset_zip(client: TestClient) -> None:
    r = client.post(
        "/finetune", files={"dataset": ("x.zip", b"not a zip at all")}, data={"speaker_name": "Hero"}
    )
    assert r.status_code == 400 and "zip" in r.json()["detail"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data/a.wav", b"RIFF")
    r = client.post(
        "/finetune", files={"dataset": ("d.zip", buffer.getvalue())}, data={"speaker_name": "Hero"}
    )
    assert r.status_code == 400 and "missing train.jsonl" in r.json()["detail"]
    r = client.post("/finetune", data={"speaker_name": "Hero"})
    assert r.status_code == 422 and "dataset_s3_key" in r.json()["detail"]
    assert "multipart file field 'dataset'" in r.json()["detail"]  # says how to fix it
    r = client.post("/finetune", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_unknown_job_is_404_everywhere(client: TestClient) -> None:
    assert client.get("/jobs/nosuchjob").status_code == 404
    assert client.delete("/jobs/nosuchjob").status_code == 404
    r = client.post("/infer/nosuchjob", json={"text": "Hello."})
    assert r.status_code == 404 and "nosuchjob" in r.json()["detail"]
    assert (
        client.post(
            "/infer/nosuchjob/batch", json={"items": [{"text": "a", "filename": "a.wav"}]}
        ).status_code
        == 404
    )


def test_client_job_id_is_idempotent(client: TestClient) -> None:
    first = client.post("/finetune", json=body(job_id="my-voice-1"))
    again = client.post("/finetune", json=body(job_id="my-voice-1"))
    assert first.status_code == again.status_code == 202
    assert first.json()["job_id"] == again.json()["job_id"] == "my-voice-1"
    assert [job["job_id"] for job in client.get("/jobs").json()] == ["my-voice-1"]
    progress = client.get("/jobs/my-voice-1").json()["progress"]  # whatever the stage: the six fields
    assert set(progress) == {"stage", "epoch", "total_epochs", "step", "loss", "global_step"}, progress
    r = client.post("/finetune", json=body(job_id="my-voice-1", num_epochs=3))
    assert r.status_code == 409 and "my-voice-1" in r.json()["detail"]
    assert client.post("/finetune", json=body(job_id="Not Valid")).status_code == 422
    assert client.delete("/jobs/my-voice-1").status_code == 200


def test_no_storage_and_no_upload_is_503(tmp_path: Path, tiny_models) -> None:
    settings = Settings(
        device="cpu",
        use_flash_attn=False,
        data_dir=tmp_path / "data",
        tiny_models=True,
        tiny_models_dir=tiny_models.root,
    )
    with TestClient(create_local_app(settings)) as http:
        assert http.get("/").json()["storage_configured"] is False
        r = http.post("/finetune", json=body())
        assert r.status_code == 503 and "E2E_ACCESS_KEY" in r.json()["detail"]
        # No upload and no key either (form fields only, or an empty JSON body): still the storage 503, since
        # without S3 only an upload can work.
        for r in (
            http.post("/finetune", data={"speaker_name": "hero_voice"}),
            http.post("/finetune", json={}),
        ):
            assert r.status_code == 503 and "'dataset'" in r.json()["detail"], r.text
        r = http.post("/finetune", json={"speaker_name": "Hero_1"})  # a bad field is still named first
        assert r.status_code == 422 and "speaker_name" in r.json()["detail"]
        assert http.get("/jobs").json() == []


def test_resume_from_an_unknown_job_falls_back_with_a_warning(client: TestClient) -> None:
    job_id = client.post("/finetune", json=body(resume_job_id="neverexisted")).json()["job_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job.get("warnings") or job["status"] == "failed":
            break
        time.sleep(0.1)
    assert job["warnings"] == [
        "resume_job_id 'neverexisted' has no checkpoint; training starts from the base model"
    ]
    assert job["resume_job_id"] == "neverexisted"
    assert client.delete(f"/jobs/{job_id}").status_code == 200


def test_unknown_fields_are_ignored_like_the_original_service_and_named(
    client: TestClient, dataset_zip: Path
) -> None:
    r = client.post("/finetune", json=body(flash_attn=True, voice_style="warm"))
    assert r.status_code == 202, r.text
    assert r.json()["warnings"] == ["ignored unknown field(s): flash_attn, voice_style"]
    assert client.delete(f"/jobs/{r.json()['job_id']}").status_code == 200
    with open(dataset_zip, "rb") as handle:
        r = client.post(
            "/finetune", files={"dataset": handle}, data={"speaker_name": "Hero", "colour": "blue"}
        )
    assert r.status_code == 202 and r.json()["warnings"] == ["ignored unknown field(s): colour"], r.text
    assert client.delete(f"/jobs/{r.json()['job_id']}").status_code == 200
    assert "warnings" not in client.post("/finetune", json=body(job_id="plain-one")).json()
    assert client.delete("/jobs/plain-one").status_code == 200
