"""Failure messages shown to clients name files relative to the data folder and S3 objects as s3://bucket/key:
never an absolute server path, never the S3 endpoint's address. Real failures: S3 unreachable when a job is
submitted, and a training whose checkpoint upload cannot reach S3 (a real `vft train` on the tiny models)."""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers.servers import server_environment
from voicefinetune.serve import create_local_app
from voicefinetune.settings import Settings

pytestmark = pytest.mark.timeout(300)  # a real `vft train` on a shared CPU, then three upload attempts
TRAINING_TIMEOUT = 240.0
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/[\w.-]+/")  # a '/' that starts a path, not one inside a URL or key


@pytest.fixture
def unreachable_s3(tmp_path: Path, tiny_models) -> Iterator[tuple[TestClient, Settings]]:
    """A facade whose S3 endpoint is a closed port on loopback (nothing listens there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    environment = server_environment(
        tmp_path / "data",
        s3_endpoint=dead,
        bucket=f"vft-gone-{uuid.uuid4().hex[:8]}",
        tiny_root=tiny_models.root,
    )
    settings = Settings.from_env({**environment, "VFT_S3_CONNECT_TIMEOUT": "1"})
    with TestClient(create_local_app(settings)) as client:
        yield client, settings


def assert_public(message: str, settings: Settings) -> None:
    endpoint = settings.s3_endpoint_url
    assert endpoint not in message and endpoint.removeprefix("http://") not in message, message
    assert str(settings.data_dir.resolve()) not in message and str(settings.data_dir) not in message, message
    assert not ABSOLUTE_PATH.search(message), message


def test_s3_unreachable_at_submission_names_the_object_not_the_endpoint(unreachable_s3) -> None:
    client, settings = unreachable_s3
    answer = client.post(
        "/finetune", json={"dataset_s3_key": "datasets/hero/dataset.zip", "speaker_name": "Hero"}
    )
    assert answer.status_code == 503, answer.text
    where = f"s3://{settings.s3_bucket}/datasets/hero/dataset.zip"
    assert answer.json() == {
        "detail": f"S3 storage is unavailable: S3 head of {where} failed: "
        f'Could not connect to the endpoint URL: "{where}"'
    }
    assert_public(answer.json()["detail"], settings)


def test_a_training_that_cannot_upload_its_checkpoint_fails_with_a_public_message(
    unreachable_s3, dataset_zip: Path
) -> None:
    client, settings = unreachable_s3
    with open(dataset_zip, "rb") as handle:
        submitted = client.post(
            "/finetune",
            files={"dataset": handle},
            data={"speaker_name": "Hero", "num_epochs": "1", "lr": "1e-3"},
        )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    deadline = time.monotonic() + TRAINING_TIMEOUT
    job = client.get(f"/jobs/{job_id}").json()
    while job["status"] not in ("ready", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed", job
    error = job["error"]
    # What to fix: S3 (named by the object, not its address) could not be reached; the checkpoint is kept (named
    # by its folder inside the data folder).
    assert error.startswith(
        f"could not publish the checkpoint to s3://{settings.s3_bucket}/checkpoints/{job_id} at the S3 endpoint after "
        f'3 attempts (last error: Could not connect to the endpoint URL: "s3://{settings.s3_bucket}'
    ), error
    assert error.endswith(
        f"The local checkpoint is kept at jobs/{job_id}/output/checkpoint-epoch-0: check E2E_ENDPOINT_URL and the "
        "S3 credentials, then run the job again"
    ), error
    assert_public(error, settings)
