"""/ops/running lists a training's data preparation and training while they run, against a real `vft serve` (tiny
models, moto S3); each leaves the list when it ends and is then in /ops/history."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.helpers.servers import Server

RUNNING_FIELDS = {"op_name", "job_id", "started_at", "elapsed_seconds"}
TRAINING_OPS = ("prepare_data", "training")  # (the trained voice's model_load follows, under the same job id)


def _running_for(server: Server, job_id: str) -> list[dict]:
    running = httpx.get(f"{server.url}/ops/running", timeout=10).json()
    return [entry for entry in running if entry["job_id"] == job_id and entry["op_name"] in TRAINING_OPS]


def _watch_running(server: Server, job_id: str, until: tuple[str, ...], timeout: float = 240.0) -> list[dict]:
    """Poll /ops/running until the job reaches one of ``until``; the distinct entries seen for it, in order."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        for entry in _running_for(server, job_id):
            if not any(entry["op_name"] == earlier["op_name"] for earlier in seen):
                seen.append(entry)
        if httpx.get(f"{server.url}/jobs/{job_id}", timeout=10).json()["status"] in until:
            return seen
        assert time.monotonic() < deadline, f"job {job_id} not in {until} after {timeout}s; seen {seen}"


def test_preparation_and_training_are_listed_while_they_run(served: Server, dataset_zip: Path) -> None:
    with served.client() as http:
        r = http.post(
            "/finetune",
            files={"dataset": dataset_zip.read_bytes()},
            data={"speaker_name": "Watched", "num_epochs": "3"},
        )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    submitted = time.time()

    seen = _watch_running(served, job_id, until=("ready", "failed"))

    assert [entry["op_name"] for entry in seen] == ["prepare_data", "training"]
    for entry in seen:
        assert set(entry) == RUNNING_FIELDS, entry
        assert entry["job_id"] == job_id
        assert submitted - 1 <= entry["started_at"] <= time.time()
        assert entry["elapsed_seconds"] >= 0
    assert seen[0]["started_at"] <= seen[1]["started_at"]
    assert _running_for(served, job_id) == []
    history = httpx.get(f"{served.url}/ops/history", params={"job_id": job_id}).json()
    assert [(r["op_name"], r["ok"]) for r in reversed(history) if r["op_name"] in TRAINING_OPS] == [
        ("prepare_data", True),
        ("training", True),
    ]


def test_a_cancelled_training_leaves_the_list(served: Server, dataset_zip: Path) -> None:
    with served.client() as http:
        r = http.post(
            "/finetune",
            files={"dataset": dataset_zip.read_bytes()},
            data={"speaker_name": "Cancelled", "num_epochs": "200"},
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 240
        while [entry["op_name"] for entry in _running_for(served, job_id)] != ["training"]:
            assert time.monotonic() < deadline, "the training never showed in /ops/running"

        assert http.delete(f"/jobs/{job_id}").status_code == 200

        assert _running_for(served, job_id) == []
        history = http.get("/ops/history", params={"job_id": job_id}).json()
        assert [(record["op_name"], record["ok"]) for record in reversed(history)] == [
            ("prepare_data", True),
            ("training", False),
        ]
