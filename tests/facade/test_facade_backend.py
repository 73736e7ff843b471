"""The facade's Kubernetes backend against the emulated API server: jobs are VoiceFinetunes, reads come from the
watch-fed cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.helpers.k8s_harness import GROUP, PLURAL, VERSION, VFT
from voicefinetune.devtools.sample_data import make_dataset_zip
from voicefinetune.facade.backend import DatasetNotFound, JobConflict
from voicefinetune.facade.kubernetes_backend import KubernetesBackend, uploaded_dataset_key
from voicefinetune.schemas import FinetuneRequest

DATASET = "datasets/Hero1/dataset.zip"


async def eventually(check, timeout: float = 60.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


@pytest.fixture
async def backend(settings, storage, kubeconfig):
    storage.upload_bytes(b"PK zip", DATASET, content_type="application/zip")
    backend = KubernetesBackend(settings, kubeconfig=str(kubeconfig))
    await backend.start()
    yield backend
    await backend.stop()


def patch_status(custom, name: str, status: dict) -> None:
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, name, {"status": status})


async def test_create_makes_a_voicefinetune_and_reads_come_from_the_cache(backend, cluster, custom):
    job = await backend.create(FinetuneRequest(dataset_s3_key=DATASET, speaker_name="Hero1", num_epochs=3))
    assert job.status == "queued" and job.speaker_name == "Hero1" and job.config.num_epochs == 3
    (resource,) = cluster.objects(VFT)
    assert resource["metadata"]["name"] == job.job_id
    assert resource["spec"] == {
        "datasetS3Key": DATASET,
        "speakerName": "Hero1",
        "numEpochs": 3,
        "batchSize": 2,
        "lr": 1e-6,
        "gradientAccumulationSteps": 1,
        "language": "English",
        "method": "full",
        "loraRank": 16,
    }
    patch_status(
        custom,
        job.job_id,
        {
            "phase": "Training",
            "progress": {
                "stage": "training",
                "epoch": 1,
                "totalEpochs": 3,
                "step": 2,
                "loss": 0.5,
                "globalStep": 5,
            },
        },
    )
    seen = await eventually(lambda: _status(backend, job.job_id, "training"))
    assert seen.progress.model_dump() == {
        "stage": "training",
        "epoch": 1,
        "total_epochs": 3,
        "step": 2,
        "loss": 0.5,
        "global_step": 5,
    }
    reads = cluster.call(lambda e: dict(e.served))
    for _ in range(50):
        await backend.get(job.job_id)
        await backend.list()
    assert cluster.call(lambda e: dict(e.served)) == reads, "reads must not call the API"
    patch_status(
        custom,
        job.job_id,
        {
            "phase": "Ready",
            "inferenceUrl": f"/infer/{job.job_id}",
            "checkpointPath": f"checkpoints/{job.job_id}",
            "completedAt": "2026-01-01T00:00:00Z",
        },
    )
    ready = await eventually(lambda: _status(backend, job.job_id, "ready"))
    assert (ready.inference_url, ready.checkpoint_path) == (
        f"/infer/{job.job_id}",
        f"checkpoints/{job.job_id}",
    )
    assert [j.job_id for j in await backend.list()] == [job.job_id]


async def test_a_lora_job_goes_into_the_spec_and_reports_its_method(backend, cluster):
    request = FinetuneRequest(
        dataset_s3_key=DATASET, method="lora", lora_rank=4, lora_targets="q_proj,v_proj"
    )
    job = await backend.create(request)
    assert job.config.method == "lora"
    (resource,) = cluster.objects(VFT)
    assert {k: v for k, v in resource["spec"].items() if k.startswith(("method", "lora"))} == {
        "method": "lora",
        "loraRank": 4,
        "loraTargets": ["q_proj", "v_proj"],
    }
    read = await eventually(lambda: backend.get(job.job_id))
    assert read.config.method == "lora"


async def _status(backend, job_id, wanted):
    job = await backend.get(job_id)
    return job if job is not None and job.status == wanted else None


async def test_failed_resource_reads_as_failed_with_its_error(backend, custom):
    job = await backend.create(FinetuneRequest(dataset_s3_key=DATASET))
    patch_status(custom, job.job_id, {"phase": "Failed", "error": "pod x: trainer exited 1 (Error): bad zip"})
    failed = await eventually(lambda: _status(backend, job.job_id, "failed"))
    assert failed.error == "pod x: trainer exited 1 (Error): bad zip"


async def test_dataset_must_exist_and_uploads_go_to_s3_first(backend, cluster, storage, tmp_path: Path):
    with pytest.raises(DatasetNotFound, match="datasets/missing.zip"):
        await backend.create(FinetuneRequest(dataset_s3_key="datasets/missing.zip"))
    assert not cluster.objects(VFT)
    upload = make_dataset_zip(tmp_path / "dataset.zip", count=2)
    job = await backend.create(
        FinetuneRequest(dataset_s3_key="upload:dataset.zip", job_id="uploaded"), upload
    )
    key = uploaded_dataset_key("uploaded")
    assert storage.exists(key) and job.dataset_s3_key == key
    (resource,) = cluster.objects(VFT)
    assert resource["spec"]["datasetS3Key"] == key


async def test_a_chosen_job_id_is_idempotent_and_conflicts_on_other_parameters(backend, cluster):
    request = FinetuneRequest(dataset_s3_key=DATASET, job_id="hero-v1", num_epochs=4)
    first = await backend.create(request)
    again = await backend.create(request)
    assert again.job_id == first.job_id == "hero-v1" and len(cluster.objects(VFT)) == 1
    with pytest.raises(JobConflict, match="different parameters"):
        await backend.create(request.model_copy(update={"num_epochs": 5}))


async def test_delete_removes_the_resource(backend, cluster):
    job = await backend.create(FinetuneRequest(dataset_s3_key=DATASET))
    assert await backend.delete(job.job_id) is True
    assert await backend.get(job.job_id) is None
    assert not cluster.objects(VFT)
    assert await backend.delete(job.job_id) is False


@pytest.mark.parametrize(
    ("use_flash_attn", "device", "spec", "status", "expected"),
    [
        (True, "cuda:0", {}, {}, True),
        (True, "cuda:0", {"gpus": 0}, {}, False),  # the pod trains on the CPU
        (True, "cpu", {}, {}, False),
        (False, "cuda:0", {}, {}, False),
        (True, "cuda:0", {}, {"flashAttention": False}, False),  # what the trainer reported wins
    ],
)
def test_config_flash_attn_says_whether_the_training_uses_it(use_flash_attn, device, spec, status, expected):
    from voicefinetune.settings import Settings

    backend = KubernetesBackend(Settings(use_flash_attn=use_flash_attn, device=device))
    resource = {"metadata": {"name": "hero"}, "spec": {"datasetS3Key": DATASET, **spec}, "status": status}
    assert backend._flash_attn(resource) is expected
