"""The whole cluster flow with real parts: the facade (`vft serve --backend kubernetes`), the operator (restarted
midway), the training "pod" played by running the Job's own command here (tiny models, moto S3), the Job marked
succeeded, the voice loaded into a real `vft inference`, audio through the facade, deletion with its cleanup."""

from __future__ import annotations

import os

import httpx

from tests.helpers.k8s_harness import (
    JOBS,
    VFT,
    mark_job,
    operator_environment,
    play_training_pod,
    wait_for,
)
from voicefinetune.devtools.sample_data import make_dataset_zip

S3_KEYS = ("E2E_ACCESS_KEY", "E2E_SECRET_KEY", "E2E_BUCKET", "E2E_ENDPOINT_URL")
DATASET = "datasets/Hero1/dataset.zip"


def resource(cluster, name: str) -> dict:
    found = [o for o in cluster.objects(VFT) if o["metadata"]["name"] == name]
    return found[0] if found else {}


def test_finetune_train_load_infer_delete_on_the_cluster(
    cluster,
    kubeconfig,
    start_operator,
    services,
    batch,
    core,
    settings,
    settings_env,
    storage,
    tiny_models,
    tmp_path,
):
    storage.upload_file(make_dataset_zip(tmp_path / "dataset.zip", count=4), DATASET)
    s3 = {key: settings_env[key] for key in S3_KEYS}

    inference = services(
        ["inference"], {**settings_env, "VFT_DATA_DIR": str(tmp_path / "inference-pod")}, "inference"
    )
    facade = services(
        ["serve", "--backend", "kubernetes"],
        {
            **os.environ,
            **s3,
            "KUBECONFIG": str(kubeconfig),
            "VFT_NAMESPACE": "default",
            "VFT_INFERENCE_URL": inference.url,
            "VFT_DATA_DIR": str(tmp_path / "facade-pod"),
            "USE_FLASH_ATTN": "0",
        },
        "facade",
    )
    operator_env = operator_environment(kubeconfig, inference.url, s3)
    operator = start_operator(env=operator_env)
    facade.wait_healthy()
    inference.wait_healthy()

    # REST -> VoiceFinetune -> Job
    created = httpx.post(
        f"{facade.url}/finetune",
        json={
            "dataset_s3_key": DATASET,
            "speaker_name": "hero_voice",
            "num_epochs": 2,
            "batch_size": 2,
            "lr": 1e-3,
        },
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["job_id"]
    assert created.json()["status"] == "queued"
    (job,) = wait_for(lambda: cluster.objects(JOBS), what="the training Job")
    assert job["metadata"]["ownerReferences"][0]["uid"] == resource(cluster, job_id)["metadata"]["uid"]

    # The operator restarts midway: it adopts the Job instead of making another one.
    operator.stop()
    restarted = start_operator(env=operator_env)
    # It has listed the resource and resumed it (adopting the Job) before the Jobs are counted.
    wait_for(lambda: restarted.reconciled("resume") >= 1, what="the restarted operator's resume handler")
    assert [j["metadata"]["uid"] for j in cluster.objects(JOBS)] == [job["metadata"]["uid"]]

    # Play the pod: the Job's own command, with what the Secret and the node would provide.
    play_training_pod(
        job,
        s3,
        tiny_models_root=tiny_models.root,
        data_dir=tmp_path / "trainer-pod",
        hf_home=tmp_path / "hf",
        core=core,
    )
    status = resource(cluster, job_id)["status"]
    assert status["phase"] == "Training"
    assert status["progress"]["totalEpochs"] == 2 and status["progress"]["stage"] in ("uploading", "done")
    assert status["checkpointPath"] == f"checkpoints/{job_id}"
    seen = httpx.get(f"{facade.url}/jobs/{job_id}").json()
    assert seen["status"] == "training" and seen["progress"]["total_epochs"] == 2
    not_yet = httpx.post(f"{facade.url}/infer/{job_id}", json={"text": "Hello."})
    assert not_yet.status_code == 409

    # The Job controller's part: the Job succeeded -> Loading -> Ready.
    mark_job(batch, job["metadata"]["name"], outcome="Complete")
    ready = wait_for(
        lambda: (
            httpx.get(f"{facade.url}/jobs/{job_id}").json()["status"] == "ready"
            and httpx.get(f"{facade.url}/jobs/{job_id}").json()
        ),
        timeout=120,
        interval=0.2,
        what="the job to be ready",
    )
    assert (
        ready["inference_url"] == f"/infer/{job_id}" and ready["checkpoint_path"] == f"checkpoints/{job_id}"
    )
    reasons = [e["reason"] for e in cluster.objects("v1/events") if e["involvedObject"]["name"] == job_id]
    assert {"JobCreated", "Preparing", "Training", "JobSucceeded", "VoiceLoaded"} <= set(reasons)
    loaded = {v["job_id"]: v for v in httpx.get(f"{inference.url}/voices").json()}
    assert loaded[job_id]["loaded"] is True  # preloaded during Loading

    audio = httpx.post(
        f"{facade.url}/infer/{job_id}",
        json={"text": "Hello from the cluster.", "upload_to_s3": False},
        timeout=120,
    )
    assert audio.status_code == 200, audio.text
    assert audio.headers["content-type"] == "audio/wav" and audio.content[:4] == b"RIFF"
    assert audio.headers["x-vft-replica"] == inference.url

    # Delete: the Job goes, the finalizer unregisters the voice, then the resource goes.
    deleted = httpx.delete(f"{facade.url}/jobs/{job_id}")
    assert deleted.status_code == 200
    wait_for(lambda: not cluster.objects(VFT), timeout=60, what="the resource to go")
    assert not cluster.objects(JOBS)
    assert job_id not in {v["job_id"] for v in httpx.get(f"{inference.url}/voices").json()}
    assert httpx.get(f"{facade.url}/jobs/{job_id}").status_code == 404
    assert list(storage.list(f"checkpoints/{job_id}/")), (
        "deletionPolicy Retain (the default) keeps the checkpoint"
    )
