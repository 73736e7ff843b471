"""A failed training's status.error (what GET /jobs/{id} shows) names files relative to the pod's data folder and
S3 objects as s3://bucket/key, never the S3 endpoint's address, even when the trainer's last log lines (its
termination message) carry them."""

from __future__ import annotations

from tests.helpers.k8s_harness import (
    GROUP,
    JOBS,
    PLURAL,
    VERSION,
    VFT,
    mark_job,
    operator_environment,
    voicefinetune,
    wait_for,
)

ENDPOINT = "http://10.20.30.40:9000"


def test_the_pods_last_words_lose_the_endpoint_and_the_data_folder(
    cluster, kubeconfig, start_operator, custom, batch, core
) -> None:
    start_operator(env=operator_environment(kubeconfig, "http://127.0.0.1:9", {"E2E_ENDPOINT_URL": ENDPOINT}))
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, voicefinetune("offline"))
    (job,) = wait_for(lambda: cluster.objects(JOBS), what="the training Job")
    job_name = job["metadata"]["name"]
    said = (
        f"S3 upload of s3://vft/checkpoints/offline/model.safetensors at {ENDPOINT} failed: Could not connect to the "
        f'endpoint URL: "{ENDPOINT}/vft/checkpoints/offline/model.safetensors"; the checkpoint stays in '
        "/data/jobs/offline/output/checkpoint-epoch-0"
    )
    core.create_namespaced_pod(
        "default",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job_name}-q8w2e",
                "labels": {"batch.kubernetes.io/job-name": job_name, "job-name": job_name},
                "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job["metadata"]["uid"]}
                ],
            },
            "spec": job["spec"]["template"]["spec"],
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "ready": False,
                        "restartCount": 0,
                        "image": "trainer",
                        "imageID": "",
                        "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": said}},
                    }
                ],
            },
        },
    )
    mark_job(
        batch,
        job_name,
        outcome="Failed",
        reason="BackoffLimitExceeded",
        message="Job has reached the specified backoff limit",
    )

    def failed() -> dict | None:
        (resource,) = [o for o in cluster.objects(VFT) if o["metadata"]["name"] == "offline"]
        status = resource.get("status") or {}
        return status if status.get("phase") == "Failed" else None

    status = wait_for(failed, what="phase Failed")
    assert status["error"] == (
        f"Job has reached the specified backoff limit; pod {job_name}-q8w2e: trainer exited 1 (Error): "
        "S3 upload of s3://vft/checkpoints/offline/model.safetensors at the S3 endpoint failed: Could not connect to "
        'the endpoint URL: "s3://vft/checkpoints/offline/model.safetensors"; the checkpoint stays in '
        "jobs/offline/output/checkpoint-epoch-0"
    )
