"""DELETE /jobs/{id} while /infer/{id}/batch runs, against a real `vft serve` (tiny models, moto S3): the batch
stops with a 404 saying the job was deleted, nothing is uploaded after the DELETE answered, the voice is unloaded,
its folder is gone and stays gone after a restart (which also removes job folders that no job refers to)."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers.servers import Server, free_port, server_environment, train_voice
from voicefinetune.devtools.tiny_configs import TINY_SPEAKER
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage

ITEMS = 40


@pytest.fixture(scope="module")
def one_item_calls(tmp_path_factory, s3_endpoint: str, tiny_models) -> Iterator[Server]:
    """A `vft serve` that generates one batch item per model call (VFT_INFERENCE_MAX_BATCH=1), so a batch's items
    are uploaded one after another."""
    root = tmp_path_factory.mktemp("serve-delete")
    env = server_environment(
        root / "data",
        s3_endpoint=s3_endpoint,
        bucket=f"vft-del-{uuid.uuid4().hex[:10]}",
        tiny_root=tiny_models.root,
    )
    env["VFT_INFERENCE_MAX_BATCH"] = "1"
    Storage(Settings.from_env(env)).ensure_bucket()
    server = Server(env=env, port=free_port(), log_path=root / "serve.log").start()
    yield server
    server.stop()


def _uploaded(storage: Storage, job_id: str) -> list[str]:
    return sorted(obj.key for obj in storage.list(f"audio/{job_id}/"))


def _wait_for_first_upload(storage: Storage, job_id: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not _uploaded(storage, job_id):
        assert time.monotonic() < deadline, f"no item of the batch was uploaded in {timeout}s"
        time.sleep(0.05)


def test_delete_during_batch_stops_it_unloads_the_voice_and_removes_its_files(
    one_item_calls: Server, dataset_zip: Path
) -> None:
    server = one_item_calls
    job_id = train_voice(server, dataset_zip, "Doomed")
    storage = Storage(server.settings)
    job_dir = server.settings.job_dir(job_id)
    items = [
        {"text": f"Sentence number {i} of a long chapter.", "filename": f"line_{i:03d}.wav"}
        for i in range(ITEMS)
    ]
    with ThreadPoolExecutor(1) as pool, server.client(timeout=300) as http:
        batch = pool.submit(http.post, f"/infer/{job_id}/batch", json={"items": items, "language": "English"})
        _wait_for_first_upload(storage, job_id)
        deleted = httpx.delete(f"{server.url}/jobs/{job_id}", timeout=120)
        uploaded_when_deleted = _uploaded(storage, job_id)
        answer = batch.result(timeout=300)

        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {"job_id": job_id, "status": "deleted", "previous_status": "ready"}
        assert answer.status_code == 404, answer.text[:500]
        assert answer.json() == {
            "detail": f"job {job_id!r} was deleted: its voice is no longer served, and this request was stopped"
        }
        assert 0 < len(uploaded_when_deleted) < ITEMS
        assert _uploaded(storage, job_id) == uploaded_when_deleted
        status = http.get("/gpu/status").json()
        assert [model for model in status["loaded_models"] if model["job_id"] == job_id] == []
        assert job_id not in {voice["job_id"] for voice in http.get("/voices").json()}
    assert not job_dir.exists()

    server.restart()
    with server.client() as http:
        assert http.get(f"/jobs/{job_id}").status_code == 404
        assert job_id not in {voice["job_id"] for voice in http.get("/voices").json()}
    assert not job_dir.exists()


def test_restart_removes_job_folders_no_job_refers_to(
    one_item_calls: Server, dataset_zip: Path, tiny_models
) -> None:
    """What a deletion interrupted by a crash leaves behind goes at the next start; the folders of real jobs and of
    voices registered without a job (POST /voices) stay."""
    server = one_item_calls
    job_id = train_voice(server, dataset_zip, "Kept")
    leftover = server.settings.job_dir(f"gone-{uuid.uuid4().hex[:8]}") / "output" / "checkpoint-epoch-0"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{}")
    registered = server.settings.job_dir(f"admin-{uuid.uuid4().hex[:8]}") / "output" / "checkpoint-epoch-0"
    shutil.copytree(tiny_models.custom_voice, registered)
    r = httpx.post(
        f"{server.url}/voices/{registered.parent.parent.name}", json={"speaker_name": TINY_SPEAKER}
    )
    assert r.status_code == 200, r.text

    server.restart()

    assert not leftover.parent.parent.exists()
    assert (registered / "config.json").is_file()
    assert (
        server.settings.data_dir / httpx.get(f"{server.url}/jobs/{job_id}").json()["checkpoint_path"]
    ).is_dir()
