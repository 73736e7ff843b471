"""A bad dataset fails within seconds, ahead of the training queue: given by S3 key or uploaded, while another
training occupies the only training slot, with the trainer's own message naming every problem."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from voicefinetune.dataset import DatasetError, open_dataset
from voicefinetune.devtools.sample_data import Clip, manifest_lines, reference_clip, speech_clips
from voicefinetune.schemas import SAMPLE_RATE
from voicefinetune.storage import Storage

FAIL_WITHIN_SECONDS = 10.0
BAD_KEY = "datasets/bad/voice.zip"


def bad_dataset(path: Path) -> Path:
    """A 0.2 s clip (line 1), a missing WAV (line 2) and a line that is not JSON (line 3)."""
    short = Clip("Too short.", np.full(int(0.2 * SAMPLE_RATE), 0.1, dtype=np.float32), SAMPLE_RATE)
    clips = [short, *speech_clips(3, seed=1)]
    lines = manifest_lines(clips)
    lines[1] = json.dumps({"audio": "./data/nope.wav", "text": "Gone.", "ref_audio": "./data/ref_audio.wav"})
    lines[2] = lines[2][:-1] + ","
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train.jsonl", "\n".join(lines) + "\n")
        archive.writestr("data/ref_audio.wav", reference_clip().wav_bytes())
        for i, clip in enumerate(clips, start=1):
            archive.writestr(f"data/seg_{i:08d}.wav", clip.wav_bytes())
    return path


def trainer_message(zip_path: Path, tmp_path: Path) -> str:
    with pytest.raises(DatasetError) as caught:
        open_dataset(zip_path, tmp_path / "expected")
    return str(caught.value)


def wait_failed(served, job_id: str) -> tuple[dict, float]:
    started = time.monotonic()
    job = served.wait_for(job_id, ("failed", "ready"), timeout=FAIL_WITHIN_SECONDS)
    return job, time.monotonic() - started


def test_bad_datasets_fail_within_seconds_while_a_training_holds_the_queue(served, dataset_zip, tmp_path):
    zip_path = bad_dataset(tmp_path / "bad.zip")
    expected = trainer_message(zip_path, tmp_path)
    assert "line 1" in expected and "nope.wav" in expected and "line 3: invalid JSON" in expected
    Storage(served.settings).upload_file(zip_path, BAD_KEY)
    with served.client() as http:
        long = http.post(
            "/finetune",
            files={"dataset": dataset_zip.read_bytes()},
            data={"speaker_name": "Long1", "num_epochs": "500"},
        )
        assert long.status_code == 202, long.text
        long_id = long.json()["job_id"]
        served.wait_for(long_id, ("preparing", "training"), timeout=60)

        by_key = http.post("/finetune", json={"dataset_s3_key": BAD_KEY, "speaker_name": "Bad1"})
        assert by_key.status_code == 202, by_key.text
        job, seconds = wait_failed(served, by_key.json()["job_id"])
        assert (job["status"], job["error"]) == ("failed", expected), job
        assert seconds < FAIL_WITHIN_SECONDS

        uploaded = http.post(
            "/finetune", files={"dataset": zip_path.read_bytes()}, data={"speaker_name": "Bad2"}
        )
        assert uploaded.status_code == 202, uploaded.text
        job, _ = wait_failed(served, uploaded.json()["job_id"])
        assert (job["status"], job["error"]) == ("failed", expected), job

        assert http.get(f"/jobs/{long_id}").json()["status"] in ("preparing", "training")
        assert http.delete(f"/jobs/{long_id}").status_code == 200


def test_a_missing_dataset_key_is_refused_naming_the_key(served):
    with served.client() as http:
        r = http.post(
            "/finetune", json={"dataset_s3_key": "datasets/nobody/none.zip", "speaker_name": "Bad3"}
        )
    assert r.status_code == 400
    assert r.json()["detail"] == (
        f"dataset_s3_key 'datasets/nobody/none.zip' does not exist in bucket {served.settings.s3_bucket!r}: "
        "upload the zip there first"
    )
