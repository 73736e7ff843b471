"""Response shapes of the remaining endpoints, field by field, and the standalone app (`vft inference`)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time

import httpx
from voicefinetune_inference import create_app

from voicefinetune.schemas import SERVICE_NAME

ALL_PATHS = {
    "/infer/{job_id}",
    "/infer/{job_id}/batch",
    "/voice-design",
    "/voice-clone",
    "/voice-clone/batch",
    "/gpu/status",
    "/gpu/unload",
    "/gpu/config",
    "/gpu/cleanup",
    "/storage/status",
    "/storage/list/{job_id}",
    "/ops/averages",
    "/ops/history",
    "/ops/running",
    "/metrics",
    "/voices/{job_id}",
    "/voices",
    "/",
}


async def test_health_docs_and_every_route_in_the_standalone_app(settings, no_storage_settings):
    for configured, expected in ((settings, True), (no_storage_settings, False)):
        app = create_app(configured)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://app.test"
        ) as client:
            health = await client.get("/")
            assert health.json() == {"service": SERVICE_NAME, "status": "ok", "storage_configured": expected}
            assert (await client.get("/docs")).status_code == 200
            paths = set((await client.get("/openapi.json")).json()["paths"])
            assert paths >= ALL_PATHS


async def test_storage_ops_and_voices_shapes(make_service, tiny_models, kit):
    service = await make_service()
    await kit.add_voice(service, tiny_models, job_id="hero")
    async with kit.http_client(service) as client:
        status = (await client.get("/storage/status")).json()
        assert status == {
            "configured": True,
            "endpoint": service.storage.endpoint,
            "bucket": service.settings.s3_bucket,
        }
        for name in ("ch1_001.wav", "ch1_002.wav"):
            await client.post("/infer/hero", json={"text": "Chapter one.", "s3_filename": name})
        listing = (await client.get("/storage/list/hero")).json()
        assert set(listing) == {"job_id", "count", "files"} and listing["job_id"] == "hero"
        assert listing["count"] == 2 == len(listing["files"])
        assert [f["key"] for f in listing["files"]] == ["audio/hero/ch1_001.wav", "audio/hero/ch1_002.wav"]
        assert all(set(f) == {"key", "url"} and f["url"].startswith("http") for f in listing["files"])
        assert (await client.get("/storage/list/..")).status_code in (400, 404)

        averages = (await client.get("/ops/averages")).json()
        for op in ("inference_custom_voice", "model_load", "s3_upload"):
            assert set(averages[op]) == {"avg_seconds", "count"} and averages[op]["count"] >= 1
        assert averages["inference_custom_voice"]["count"] == 2
        history = (
            await client.get("/ops/history", params={"op_name": "inference_custom_voice", "limit": 1})
        ).json()
        assert (
            len(history) == 1
            and history[0]["op_name"] == "inference_custom_voice"
            and history[0]["job_id"] == "hero"
        )
        assert {"started_at", "duration_seconds"} <= set(history[0])
        by_job = (await client.get("/ops/history", params={"job_id": "hero"})).json()
        assert {r["op_name"] for r in by_job} >= {"inference_custom_voice", "model_load", "s3_upload"}
        assert (await client.get("/ops/running")).json() == []

        voices = (await client.get("/voices")).json()
        assert [v["job_id"] for v in voices] == ["hero"]
        assert set(voices[0]) == {
            "job_id",
            "speaker_name",
            "checkpoint_path",
            "s3_prefix",
            "local_path",
            "on_disk",
            "loaded",
            "registered_at",
            "last_used",
        }
        assert voices[0]["s3_prefix"] == "checkpoints/hero" and voices[0]["loaded"] is True


async def test_voice_registration_over_http(make_service, tiny_models, kit):
    service = await make_service()
    folder = kit.install_checkpoint(service, tiny_models, job_id="job-7")
    async with kit.http_client(service) as client:
        relative = folder.relative_to(
            service.settings.data_dir
        ).as_posix()  # the original service's jobs/... form
        registered = await client.post(
            "/voices/job-7", json={"speaker_name": kit.speaker, "checkpoint_path": relative, "preload": True}
        )
        assert registered.status_code == 200, registered.text
        assert registered.json()["loaded"] is True and registered.json()["checkpoint_path"] == str(
            folder.absolute()
        )
        status = (await client.get("/gpu/status")).json()
        assert status["loaded_checkpoint"] == relative and status["speaker_name"] == kit.speaker

        # persisted: a new service on the same state folder serves it
        other = await make_service()
        assert [v["job_id"] for v in other.catalog.all()] == ["job-7"]

        nowhere = await client.post("/voices/job-8", json={"speaker_name": kit.speaker})
        assert nowhere.status_code == 400 and "checkpoint_path" in nowhere.json()["detail"]
        climbing = await client.post("/voices/job-8", json={"speaker_name": "x", "checkpoint_path": "../etc"})
        assert climbing.status_code == 400
        bad_id = await client.post("/voices/..", json={"speaker_name": "x", "checkpoint_path": str(folder)})
        assert bad_id.status_code in (400, 404)
        own = kit.install_checkpoint(service, tiny_models, job_id="job-9").relative_to(
            service.settings.data_dir
        )
        wrong_speaker = await client.post(
            "/voices/job-9",
            json={"speaker_name": "nobody", "checkpoint_path": own.as_posix(), "preload": True},
        )
        assert wrong_speaker.status_code == 409 and "tiny_speaker" in wrong_speaker.json()["detail"]
        assert "job-9" not in {
            v["job_id"] for v in (await client.get("/voices")).json()
        }  # a failed preload keeps nothing

        deleted = await client.delete("/voices/job-7")
        assert deleted.json() == {"job_id": "job-7", "unregistered": True}
        assert (await client.get("/gpu/status")).json()["model_loaded"] is False
        assert (await client.delete("/voices/job-7")).status_code == 404
        assert (await client.post("/infer/job-7", json={"text": "Hi."})).status_code == 404


async def test_voice_design_shapes_and_metrics(make_service, kit):
    service = await make_service()
    async with kit.http_client(service) as client:
        wav = await client.post("/voice-design", json={"text": "Welcome.", "instruct": "A warm male voice"})
        assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
        uploaded = await client.post(
            "/voice-design",
            json={
                "text": "Welcome.",
                "instruct": "A warm voice",
                "upload_to_s3": True,
                "s3_filename": "ref_voice.wav",
            },
        )
        body = uploaded.json()
        assert set(body) == {
            "s3_url",
            "presigned_url",
            "s3_key",
            "sample_rate",
            "text",
            "job_id",
            "kept_existing",
            "note",
        }
        digest = hashlib.sha256(b"English\nA warm voice").hexdigest()[:16]  # the description's folder
        assert body["s3_key"] == f"audio/design/{digest}/ref_voice.wav" and body["job_id"] is None
        assert (await client.post("/voice-design", json={"text": "", "instruct": "x"})).status_code == 400
        assert (await client.post("/voice-design", json={"text": "Hi."})).status_code == 422

        metrics = (await client.get("/metrics")).text
    for name in (
        'vft_inference_request_duration_seconds_count{endpoint="/voice-design",method="POST",status="200"}',
        'vft_inference_audio_generated_seconds_total{kind="voice_design"}',
        "vft_inference_model_load_seconds_count",
        "vft_inference_model_unload_seconds_count",
        "vft_inference_cache_hits_total",
        "vft_inference_cache_misses_total",
        "vft_inference_cache_evictions_total",
        "vft_inference_age_at_eviction_seconds_count",
        "vft_inference_models_loaded",
        "vft_inference_vram_used_bytes",
        "vft_inference_s3_upload_seconds_count",
        "vft_inference_generate_batch_size_count",
    ):
        assert name in metrics, name
    assert service.opslog.averages()["inference_voice_design"]["count"] == 3 - 1  # the 400 never ran


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_vft_inference_command_serves(settings_env, tmp_path):
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "voicefinetune.cli", "inference", "--host", "127.0.0.1", "--port", str(port)],
        env={**settings_env, "GPU_MAX_MODELS": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "vft inference did not start"
                time.sleep(0.3)
        assert health.json() == {"service": SERVICE_NAME, "status": "ok", "storage_configured": True}
        status = httpx.get(f"http://127.0.0.1:{port}/gpu/status").json()
        assert status["max_models"] == 2 and status["total_requests"] == 0
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert os.path.isdir(settings_env["VFT_DATA_DIR"] + "/state")


async def test_registration_defaults_to_the_trainer_layout(make_service, tiny_models, kit):
    """`vft train --job-id ID` output, then `POST /voices/ID {"speaker_name"}`: the newest epoch (or S3) is found."""
    import shutil

    from voicefinetune.storage import checkpoint_prefix

    service = await make_service()
    kit.install_checkpoint(service, tiny_models, job_id="trained", epoch=3)
    newest = kit.install_checkpoint(
        service, tiny_models, job_id="trained", epoch=12
    )  # 12 > 3 numerically, not by name
    only_s3 = kit.install_checkpoint(service, tiny_models, job_id="uploaded")
    service.storage.upload_dir(only_s3, checkpoint_prefix("uploaded"))
    shutil.rmtree(service.settings.job_dir("uploaded"))
    async with kit.http_client(service) as client:
        local = await client.post("/voices/trained", json={"speaker_name": kit.speaker})
        assert local.status_code == 200, local.text
        assert local.json()["checkpoint_path"] == str(newest.absolute())
        remote = await client.post("/voices/uploaded", json={"speaker_name": kit.speaker, "preload": True})
        assert remote.status_code == 200, remote.text
        assert remote.json()["s3_prefix"] == "checkpoints/uploaded" and remote.json()["loaded"] is True
        spec = (await client.get("/openapi.json")).json()["paths"]["/voices/{job_id}"]["post"]
        assert "vft train" in spec["description"]
