"""Against a real `vft serve` subprocess (tiny models, moto S3): the original service's Microservice Integration Pattern run
as written, every curl example of the original service, /infer on an unfinished job, DELETE semantics and a restart during
training. The tests share one server; each gets the voices it needs from fixtures, so any test runs alone and in
any order."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import soundfile

from tests.helpers.servers import Server, train_voice
from voicefinetune.schemas import SAMPLE_RATE
from voicefinetune.storage import Storage

# The original service's "Microservice Integration Pattern", verbatim. Before running it, the test substitutes GPU_API (as
# the acceptance allows) and shortens `time.sleep(30)` to `time.sleep(0.5)` so polling does not dominate the run;
# nothing else changes.
SEED_PATTERN = textwrap.dedent("""
    import requests

    GPU_API = "http://<TIR_GPU_IP>:8000"

    # 0. (Optional) Generate reference audio via Voice Design
    r = requests.post(f"{GPU_API}/voice-design",
        json={
            "text": "Test sentence for voice reference.",
            "instruct": "A warm male voice, middle-aged, calm",
            "s3_filename": "ref_voice.wav",
        }
    )
    print(f"Voice design: {r.json()['s3_url']}")

    # 1. Fine-tune (one-time per voice)
    with open("voice_dataset.zip", "rb") as f:
        r = requests.post(f"{GPU_API}/finetune",
            files={"dataset": f},
            data={"speaker_name": "hero_voice", "num_epochs": 10}
        )
    job_id = r.json()["job_id"]

    # 2. Wait for training
    import time
    while True:
        r = requests.get(f"{GPU_API}/jobs/{job_id}")
        status = r.json()["status"]
        if status == "ready":
            break
        elif status == "failed":
            raise Exception(r.json()["error"])
        time.sleep(30)

    # 3. Generate audio → S3 (your main loop)
    texts = [
        {"text": "Chapter one begins.", "filename": "ch1_001.wav"},
        {"text": "The hero stood tall.", "filename": "ch1_002.wav"},
    ]
    r = requests.post(f"{GPU_API}/infer/{job_id}/batch",
        json={"items": texts, "language": "English"}
    )
    for item in r.json():
        print(f"Audio: {item['s3_url']}")

    # 4. Check operation timing
    r = requests.get(f"{GPU_API}/ops/averages")
    print(f"Avg inference time: {r.json()['inference_custom_voice']['avg_seconds']}s")
""")


def upstream_pattern_script(base_url: str) -> str:
    script = SEED_PATTERN.replace('GPU_API = "http://<TIR_GPU_IP>:8000"', f'GPU_API = "{base_url}"')
    script = script.replace("time.sleep(30)", "time.sleep(0.5)")
    assert script.count(base_url) == 1 and "time.sleep(0.5)" in script
    return script + '\nprint(f"JOB_ID={job_id}")\n'


@pytest.fixture(scope="module")
def pattern_run(served: Server, dataset_zip: Path, tmp_path_factory) -> subprocess.CompletedProcess:
    """The original service's pattern run once against the module's server: it trains the voice (10 epochs) that
    ``pattern_voice`` names."""
    workdir = tmp_path_factory.mktemp("pattern")
    (workdir / "voice_dataset.zip").write_bytes(dataset_zip.read_bytes())
    (workdir / "pattern.py").write_text(upstream_pattern_script(served.url))
    return subprocess.run(
        [sys.executable, "pattern.py"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=480,
        env={**os.environ},
    )


@pytest.fixture(scope="module")
def pattern_voice(served: Server, pattern_run: subprocess.CompletedProcess) -> str:
    """The id of the ready voice the original service's pattern trained (no test deletes it)."""
    assert pattern_run.returncode == 0, f"{pattern_run.stdout}\n{pattern_run.stderr}\n{served.log_tail()}"
    return pattern_run.stdout.splitlines()[-1].removeprefix("JOB_ID=")


@pytest.fixture
def finished_voice(served: Server, dataset_zip: Path) -> str:
    """A voice of its own, trained to ready, for a test that deletes it."""
    return train_voice(served, dataset_zip, "Finished")


@pytest.fixture
def deleted_voice(served: Server, dataset_zip: Path) -> str:
    """A voice trained to ready and then deleted: its local files are gone, S3 still holds checkpoints/{id}."""
    job_id = train_voice(served, dataset_zip, "Earlier")
    assert httpx.delete(f"{served.url}/jobs/{job_id}", timeout=60).status_code == 200
    assert not served.settings.job_dir(job_id).exists()
    assert list(Storage(served.settings).list(f"checkpoints/{job_id}/")), (
        "the deleted voice left no S3 checkpoint"
    )
    return job_id


def test_original_microservice_pattern_runs_unchanged(
    served: Server, pattern_run: subprocess.CompletedProcess
) -> None:
    result = pattern_run
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{served.log_tail()}"
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Voice design: http")
    assert [line for line in lines if line.startswith("Audio: ")] == [
        line for line in lines if line.startswith("Audio: ") and line.endswith((".wav",))
    ]
    assert sum(line.startswith("Audio: ") for line in lines) == 2
    assert any(line.startswith("Avg inference time: ") for line in lines)
    job_id = lines[-1].removeprefix("JOB_ID=")

    job = httpx.get(f"{served.url}/jobs/{job_id}").json()
    assert job["status"] == "ready"
    assert job["inference_url"] == f"/infer/{job_id}"
    assert job["checkpoint_path"] == f"jobs/{job_id}/output/checkpoint-epoch-9"
    assert (served.settings.data_dir / job["checkpoint_path"] / "config.json").is_file()
    assert job["progress"]["total_epochs"] == 10
    averages = httpx.get(f"{served.url}/ops/averages").json()
    assert averages["prepare_data"]["count"] >= 1 and averages["training"]["count"] >= 1


def test_every_original_curl_example(served: Server, dataset_zip: Path, pattern_voice: str) -> None:
    job_id = pattern_voice
    storage = Storage(served.settings)
    storage.upload_file(dataset_zip, "datasets/Hero1/dataset.zip")
    with served.client() as http:
        assert http.get("/").json() == {
            "service": "qwen3-tts-finetune-api",
            "status": "ok",
            "storage_configured": True,
        }
        # POST /finetune (JSON): 202 with the original service's response shape.
        r = http.post(
            "/finetune",
            json={
                "dataset_s3_key": "datasets/Hero1/dataset.zip",
                "speaker_name": "hero_voice",
                "num_epochs": 15,
                "batch_size": 2,
                "lr": 1e-6,
            },
        )
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "queued" and body["speaker_name"] == "hero_voice"
        assert body["config"] == {
            "num_epochs": 15,
            "batch_size": 2,
            "lr": 1e-6,
            "flash_attn": False,
            "method": "full",
        }
        second = body["job_id"]
        # GET /jobs/{id}, GET /jobs
        assert http.get(f"/jobs/{second}").json()["job_id"] == second
        assert {second, job_id} <= {job["job_id"] for job in http.get("/jobs").json()}
        # DELETE /jobs/{id} (cancels it: the rest of this test needs the CPU).
        assert http.delete(f"/jobs/{second}").status_code == 200
        assert http.get(f"/jobs/{second}").status_code == 404
        # POST /infer: WAV directly (upload_to_s3 false) ...
        r = http.post(
            f"/infer/{job_id}",
            json={
                "text": "Hello, welcome to our audiobook.",
                "language": "English",
                "upload_to_s3": False,
            },
        )
        assert r.status_code == 200 and r.content[:4] == b"RIFF", r.text[:200]
        # ... and with S3 configured the original service's first example (no upload_to_s3) answers with the upload.
        r = http.post(
            f"/infer/{job_id}", json={"text": "Hello, welcome to our audiobook.", "language": "English"}
        )
        assert r.status_code == 200 and r.json()["s3_key"].startswith(f"audio/{job_id}/"), r.text[:300]
        # POST /infer with book/chapter.
        r = http.post(
            f"/infer/{job_id}",
            json={
                "text": "Hello, welcome to our audiobook.",
                "language": "English",
                "upload_to_s3": True,
                "book_id": "book_001",
                "chapter_id": "chapter_1",
                "s3_filename": "intro.wav",
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["s3_key"] == "audio/segments/book_001/chapter_1/intro.wav"
        assert r.json()["sample_rate"] == SAMPLE_RATE and r.json()["job_id"] == job_id
        # POST /infer/{id}/batch
        r = http.post(
            f"/infer/{job_id}/batch",
            json={
                "items": [
                    {"text": "Chapter one. The adventure begins.", "filename": "ch1_001.wav"},
                    {"text": "Our hero stood at the crossroads.", "filename": "ch1_002.wav"},
                    {"text": "A cold wind blew from the north.", "filename": "ch1_003.wav"},
                ],
                "language": "English",
            },
        )
        assert r.status_code == 200, r.text
        assert [item["s3_key"] for item in r.json()] == [f"audio/{job_id}/ch1_00{i}.wav" for i in (1, 2, 3)]
        audio = httpx.get(r.json()[0]["presigned_url"], timeout=30).content
        assert audio[:4] == b"RIFF"
        # POST /voice-design (WAV)
        r = http.post(
            "/voice-design",
            json={
                "text": "Welcome to this audiobook.",
                "instruct": "A warm male voice, middle-aged, calm and authoritative",
                "language": "English",
            },
        )
        assert r.status_code == 200 and r.content[:4] == b"RIFF", r.text[:200]
        # POST /voice-clone/batch with a reference the server may fetch (base64 here: the original service's example URL is
        # on the internet, which this machine cannot reach).
        import base64

        ref = base64.b64encode(r.content).decode()
        r = http.post(
            "/voice-clone/batch",
            json={
                "ref_audio_url": ref,
                "ref_text": "This is the reference spoken text.",
                "items": [
                    {"text": "First sentence to generate in this voice.", "filename": "clone_001.wav"},
                    {"text": "Second sentence to generate concurrently.", "filename": "clone_002.wav"},
                ],
                "language": "English",
                "upload_to_s3": True,
            },
        )
        assert r.status_code == 200, r.text
        assert len(r.json()) == 2 and all("presigned_url" in item for item in r.json())
        # Storage, GPU, ops
        assert http.get("/storage/status").json()["configured"] is True
        listing = http.get(f"/storage/list/{job_id}").json()
        assert listing["job_id"] == job_id and listing["count"] >= 3
        status = http.get("/gpu/status").json()
        assert {"model_loaded", "total_requests", "idle_timeout_seconds"} <= set(status)
        assert http.post("/gpu/unload").status_code == 200
        assert (
            http.put("/gpu/config", json={"idle_timeout_seconds": 120}).json()["idle_timeout_seconds"] == 120
        )
        assert http.put("/gpu/config", json={"idle_timeout_seconds": 0}).status_code == 200
        assert http.get("/gpu/cleanup", params={"threshold_gb": 20.0}).status_code == 200
        assert http.get("/ops/averages").status_code == 200
        assert isinstance(http.get("/ops/history").json(), list | dict)
        assert http.get("/ops/history", params={"job_id": job_id}).status_code == 200
        assert (
            http.get("/ops/history", params={"op_name": "inference_custom_voice", "limit": 10}).status_code
            == 200
        )
        assert http.get("/ops/running").status_code == 200
        assert http.get("/docs").status_code == 200


def test_delete_finished_job_removes_files_and_voice(served: Server, finished_voice: str) -> None:
    job_id = finished_voice
    job_dir = served.settings.job_dir(job_id)
    assert job_dir.is_dir()
    with served.client() as http:
        r = http.delete(f"/jobs/{job_id}")
        assert r.status_code == 200 and r.json()["status"] == "deleted"
        assert http.get(f"/jobs/{job_id}").status_code == 404
        assert http.post(f"/infer/{job_id}", json={"text": "Gone."}).status_code == 404
        assert job_id not in {voice.get("job_id") for voice in _voices(http)}
    assert not job_dir.exists()


def test_restart_during_training_then_cancel_a_training(
    served: Server, dataset_zip: Path, deleted_voice: str
) -> None:
    """Kill -9 the server while a job trains and another waits; after the restart the first runs again to ready
    and both are listed. Meanwhile: /infer on an unfinished job is 409, and DELETE of a training job ends its
    `vft train` process and makes the id 404."""
    with served.client() as http:
        first = http.post(
            "/finetune",
            files={"dataset": dataset_zip.read_bytes()},
            data={"speaker_name": "Phoenix", "num_epochs": "2"},
        )
        assert first.status_code == 202, first.text
        job_id = first.json()["job_id"]
        # Resumes from an earlier voice: its local files were deleted, S3 still holds checkpoints/{id}.
        earlier = deleted_voice
        queued = http.post(
            "/finetune",
            files={"dataset": dataset_zip.read_bytes()},
            data={"speaker_name": "Queued", "num_epochs": "200", "resume_job_id": earlier},
        ).json()["job_id"]
        assert http.get(f"/jobs/{queued}").json()["status"] == "queued"
        r = http.post(f"/infer/{queued}", json={"text": "Too early."})
        assert r.status_code == 409 and queued in r.json()["detail"]
    served.wait_for(job_id, ("training",), timeout=90)
    r = httpx.post(f"{served.url}/infer/{job_id}/batch", json={"items": [{"text": "a", "filename": "a.wav"}]})
    assert r.status_code == 409
    pid = _training_pid(served, job_id)
    served.kill()  # SIGKILL: no shutdown handler runs
    _wait_dead(pid)
    served.start()
    assert {job_id, queued} <= {job["job_id"] for job in httpx.get(f"{served.url}/jobs").json()}
    job = served.wait_for(job_id, timeout=150)
    assert job["status"] == "ready", job
    assert any("restart" in warning for warning in job["warnings"])
    wav = httpx.post(
        f"{served.url}/infer/{job_id}", json={"text": "Back again.", "upload_to_s3": False}, timeout=60
    )
    assert wav.status_code == 200
    data, rate = soundfile.read(io.BytesIO(wav.content))
    assert rate == SAMPLE_RATE and len(data) > 0

    training = served.wait_for(queued, ("training",), timeout=90)
    assert training["progress"]["stage"] == "training"
    pid = _training_pid(served, queued)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[cmdline.index(b"--resume-from") + 1] == f"checkpoints/{earlier}".encode()
    assert not any("no checkpoint" in warning for warning in training["warnings"])
    with served.client() as http:
        r = http.delete(f"/jobs/{queued}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        assert not _alive(pid), "the `vft train` child still runs after DELETE"
        assert http.get(f"/jobs/{queued}").status_code == 404
        assert http.delete(f"/jobs/{queued}").status_code == 404
    assert not served.settings.job_dir(queued).exists()


def _wait_dead(pid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the training outlived the killed server"


def _voices(http: httpx.Client) -> list[dict]:
    body = http.get("/voices").json()
    return body if isinstance(body, list) else body.get("voices", [])


def _training_pid(served: Server, job_id: str) -> int:
    import json

    record = json.loads((served.settings.state_dir / "jobs" / f"{job_id}.json").read_text())
    assert record["child_pid"], record
    return int(record["child_pid"])


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
