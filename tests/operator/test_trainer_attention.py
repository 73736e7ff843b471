"""Which attention a training runs with is the trainer's to say (flash attention may fall back to sdpa): the real
trainer (the Job's own command, tiny models on the CPU) reports it in its events, the real operator writes
``status.flashAttention`` (a field the CRD declares, so an API server keeps it), and the facade's job then reports
it as ``config.flash_attn`` instead of its prediction."""

from __future__ import annotations

import os
from typing import Any

import httpx
import yaml

from tests.helpers.k8s_harness import CRD, JOBS, VFT, operator_environment, play_training_pod, wait_for
from voicefinetune.devtools.sample_data import make_dataset_zip

S3_KEYS = ("E2E_ACCESS_KEY", "E2E_SECRET_KEY", "E2E_BUCKET", "E2E_ENDPOINT_URL")
DATASET = "datasets/Hero1/dataset.zip"
REQUEST = {"dataset_s3_key": DATASET, "speaker_name": "Hero1", "num_epochs": 1, "batch_size": 2, "lr": 1e-3}


def status_schema() -> dict[str, Any]:
    (version,) = yaml.safe_load(CRD.read_text())["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["status"]


def pruned(schema: dict[str, Any], value: Any) -> Any:
    """What an API server stores of ``value`` under a structural schema: undeclared object fields dropped."""
    if isinstance(value, dict) and "properties" in schema:
        declared = schema["properties"]
        return {key: pruned(declared[key], item) for key, item in value.items() if key in declared}
    if isinstance(value, list) and "items" in schema:
        return [pruned(schema["items"], item) for item in value]
    return value


def status_of(cluster, name: str) -> dict[str, Any]:
    found = [o for o in cluster.objects(VFT) if o["metadata"]["name"] == name]
    return (found[0].get("status") or {}) if found else {}


def test_the_trainer_reports_its_attention_into_status_and_the_facades_job(
    cluster, kubeconfig, start_operator, services, core, settings_env, storage, tiny_models, tmp_path
):
    storage.upload_file(make_dataset_zip(tmp_path / "dataset.zip", count=2), DATASET)
    s3 = {key: settings_env[key] for key in S3_KEYS}
    start_operator(env=operator_environment(kubeconfig, "http://127.0.0.1:9", s3))
    # A facade that expects GPU pods with flash attention: until a trainer says otherwise, it predicts it.
    facade = services(
        ["serve", "--backend", "kubernetes"],
        {
            **os.environ,
            **s3,
            "KUBECONFIG": str(kubeconfig),
            "VFT_NAMESPACE": "default",
            "VFT_INFERENCE_URL": "http://127.0.0.1:9",
            "VFT_DATA_DIR": str(tmp_path / "facade-pod"),
            "DEVICE": "cuda:0",
            "USE_FLASH_ATTN": "1",
        },
        "facade",
    ).wait_healthy()
    created = httpx.post(f"{facade.url}/finetune", json=REQUEST)
    assert created.status_code == 202, created.text
    job_id = created.json()["job_id"]
    predicted = {"num_epochs": 1, "batch_size": 2, "lr": 1e-3, "method": "full"}
    assert created.json()["config"] == {**predicted, "flash_attn": True}
    (job,) = wait_for(lambda: cluster.objects(JOBS), what="the training Job")

    # The pod, played here: tiny models on the CPU, so the trainer loads sdpa attention.
    play_training_pod(
        job,
        s3,
        tiny_models_root=tiny_models.root,
        data_dir=tmp_path / "trainer-pod",
        hf_home=tmp_path / "hf",
        core=core,
    )
    status = wait_for(
        lambda: (
            status_of(cluster, job_id).get("progress", {}).get("stage") == "done"
            and status_of(cluster, job_id)
        ),
        what="the trainer's last report in status",
    )
    assert status["flashAttention"] is False
    assert pruned(status_schema(), status) == status  # every field written is declared: none would be pruned

    seen = wait_for(
        lambda: (
            (body := httpx.get(f"{facade.url}/jobs/{job_id}").json())["config"]["flash_attn"] is False
            and body
        ),
        what="the facade's job to report the trainer's attention",
    )
    assert seen["config"] == {**predicted, "flash_attn": False}
