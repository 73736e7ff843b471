"""The real operator (`vft operator` processes) against the emulated API server, driven by the real clients."""

from __future__ import annotations

import base64
import concurrent.futures
import socket
import subprocess

import httpx
import kubernetes
import pytest
import yaml
from voicefinetune_operator.progress import progress_token

from tests.helpers.k8s_harness import (
    GROUP,
    JOBS,
    PLURAL,
    REPO,
    VERSION,
    VFT,
    VFT_BIN,
    free_port,
    mark_job,
    operator_environment,
    voicefinetune,
    wait_for,
)

KUBECTL = str(REPO / ".venv" / "bin" / "kubectl")


def status_of(cluster, name: str) -> dict:
    objects = [o for o in cluster.objects(VFT) if o["metadata"]["name"] == name]
    return (objects[0].get("status") or {}) if objects else {}


def jobs_of(cluster) -> list[dict]:
    return cluster.objects(JOBS)


def create(custom: kubernetes.client.CustomObjectsApi, body: dict) -> dict:
    return custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)


def readme_example_path(tmp_path):
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Kubernetes") :]
    example = section[section.index("```yaml\n") + len("```yaml\n") :]
    path = tmp_path / "voicefinetune.yaml"
    path.write_text(example[: example.index("```")])
    return path


def test_readme_example_applied_with_kubectl_yields_a_gpu_job_owned_by_it(
    cluster, kubeconfig, start_operator, tmp_path
):
    start_operator()
    example = readme_example_path(tmp_path)
    name = yaml.safe_load(example.read_text())["metadata"]["name"]
    applied = subprocess.run(
        [KUBECTL, "apply", "--validate=false", "-f", str(example)],
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert applied.returncode == 0, applied.stderr
    (job,) = wait_for(lambda: jobs_of(cluster), timeout=60, what="the training Job")
    (resource,) = cluster.objects(VFT)
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "VoiceFinetune",
        name,
        resource["metadata"]["uid"],
    )
    assert owner["controller"] is True
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert wait_for(lambda: status_of(cluster, name).get("phase") == "Queued", what="phase Queued")


def test_failed_job_fails_the_resource_with_the_pods_message(cluster, start_operator, custom, batch, core):
    start_operator()
    create(custom, voicefinetune("broken"))
    (job,) = wait_for(lambda: jobs_of(cluster), what="the training Job")
    job_name = job["metadata"]["name"]
    said = "the dataset zip has no train.jsonl: put train.jsonl and data/*.wav in it"
    core.create_namespaced_pod(
        "default",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job_name}-x7k2p",
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
    status = wait_for(
        lambda: status_of(cluster, "broken").get("phase") == "Failed" and status_of(cluster, "broken"),
        what="phase Failed",
    )
    assert said in status["error"] and "backoff limit" in status["error"]
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "BackoffLimitExceeded")
    assert said in ready["message"] and ready["observedGeneration"] == 1
    events = wait_for(
        lambda: [e for e in cluster.objects("v1/events") if e["reason"] == "BackoffLimitExceeded"],
        what="the Failed event",
    )
    assert events[0]["type"] == "Warning" and events[0]["involvedObject"]["name"] == "broken"
    reasons = [e["reason"] for e in cluster.objects("v1/events")]
    assert "JobCreated" in reasons


def test_operator_restarted_midway_makes_no_second_job(cluster, kubeconfig, start_operator, custom, batch):
    env = operator_environment(kubeconfig, "http://127.0.0.1:9")
    first = start_operator(env=env)
    create(custom, voicefinetune("steady"))
    (job,) = wait_for(lambda: jobs_of(cluster), what="the training Job")
    wait_for(lambda: status_of(cluster, "steady").get("phase") == "Queued", what="phase Queued")
    first.stop()
    second = start_operator(env=env)
    # The new operator has listed the resource and resumed it (adopting its Job) before the Jobs are counted.
    wait_for(lambda: second.reconciled("resume") >= 1, timeout=60, what="the new operator's resume handler")
    assert [j["metadata"]["uid"] for j in jobs_of(cluster)] == [job["metadata"]["uid"]]
    mark_job(
        batch,
        job["metadata"]["name"],
        outcome="Failed",
        reason="DeadlineExceeded",
        message="Job was active longer than specified",
    )
    assert wait_for(lambda: status_of(cluster, "steady").get("phase") == "Failed", what="phase Failed")
    assert len(jobs_of(cluster)) == 1
    assert "JobAdopted" in second.log() or "steady" in second.log()


def test_fifty_resources_at_once_get_exactly_one_job_each(cluster, start_operator, custom):
    operator = start_operator()
    names = [f"voice-{i:02d}" for i in range(50)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        created = list(pool.map(lambda n: create(custom, voicefinetune(n)), names))
    uids = {c["metadata"]["name"]: c["metadata"]["uid"] for c in created}
    wait_for(lambda: len(jobs_of(cluster)) >= 50, timeout=60, what="50 Jobs")
    # Every create handler has finished before the Jobs are counted: a duplicate would exist by then.
    wait_for(lambda: operator.reconciled("create") >= 50, timeout=60, what="50 finished create handlers")
    jobs = jobs_of(cluster)
    assert len(jobs) == 50
    owners = sorted(j["metadata"]["ownerReferences"][0]["name"] for j in jobs)
    assert owners == names
    assert all(
        j["metadata"]["ownerReferences"][0]["uid"] == uids[j["metadata"]["ownerReferences"][0]["name"]]
        for j in jobs
    )
    wait_for(
        lambda: all(status_of(cluster, n).get("phase") == "Queued" for n in names),
        timeout=60,
        what="every resource Queued",
    )


def test_progress_reports_need_the_resources_token_and_reach_status(cluster, start_operator, custom):
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    operator = start_operator(args=("--liveness", liveness))
    assert httpx.get(liveness).status_code == 200
    create(custom, voicefinetune("talky"))
    wait_for(lambda: status_of(cluster, "talky").get("phase") == "Queued", what="phase Queued")
    url = f"{operator.url}/progress/default/talky"
    event = {"stage": "training", "epoch": 1, "total_epochs": 3, "step": 4, "loss": 0.5, "global_step": 9}
    assert httpx.post(url, json=event).status_code == 401
    wrong = progress_token("test-secret-key", "default", "other")
    assert httpx.post(url, json=event, headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    token = {"Authorization": f"Bearer {progress_token('test-secret-key', 'default', 'talky')}"}
    assert httpx.post(url, content=b"not json", headers=token).status_code == 400
    assert httpx.post(url, json=event, headers=token).status_code == 202
    status = wait_for(
        lambda: status_of(cluster, "talky").get("phase") == "Training" and status_of(cluster, "talky"),
        what="phase Training",
    )
    assert status["progress"]["epoch"] == 1 and status["progress"]["globalStep"] == 9
    answers = [
        httpx.post(url, json={**event, "global_step": 10 + i}, headers=token).json()["result"]
        for i in range(5)
    ]
    assert "throttled" in answers  # within the interval only the newest report is kept...
    assert wait_for(
        lambda: status_of(cluster, "talky")["progress"]["globalStep"] == 14, what="the last report"
    )
    missing = f"{operator.url}/progress/default/nobody"
    other = {"Authorization": f"Bearer {progress_token('test-secret-key', 'default', 'nobody')}"}
    assert httpx.post(missing, json=event, headers=other).status_code == 404
    metrics = httpx.get(f"{operator.url}/metrics").text
    assert 'vft_operator_progress_events_total{result="rejected"}' in metrics
    assert "vft_operator_reconcile_duration_seconds_bucket" in metrics
    assert 'vft_operator_resources{phase="Training"} 1.0' in metrics


def test_inference_deployment_and_service_are_kept(cluster, start_operator, client):
    start_operator()
    apps = kubernetes.client.AppsV1Api(client)
    deployment = wait_for(lambda: cluster.objects("apps/v1/deployments"), what="the inference Deployment")[0]
    assert deployment["metadata"]["name"] == "voicefinetune-inference"
    assert (
        wait_for(lambda: cluster.objects("v1/services"), what="the inference Service")[0]["spec"]["clusterIP"]
        == "None"
    )
    apps.delete_namespaced_deployment("voicefinetune-inference", "default")
    recreated = wait_for(lambda: cluster.objects("apps/v1/deployments"), what="the Deployment back")[0]
    assert recreated["metadata"]["uid"] != deployment["metadata"]["uid"]
    apps.patch_namespaced_deployment("voicefinetune-inference", "default", {"spec": {"replicas": 0}})
    assert wait_for(
        lambda: cluster.objects("apps/v1/deployments")[0]["spec"]["replicas"] == 1,
        what="replicas patched back",
    )


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_deletion_stops_the_job_and_honours_the_deletion_policy(
    cluster, kubeconfig, start_operator, custom, storage, settings_env, policy
):
    env = operator_environment(
        kubeconfig,
        "http://127.0.0.1:9",
        {
            key: settings_env[key]
            for key in ("E2E_ACCESS_KEY", "E2E_SECRET_KEY", "E2E_BUCKET", "E2E_ENDPOINT_URL")
        },
    )
    start_operator(env=env)
    storage.upload_bytes(b"weights", "checkpoints/doomed/model.safetensors")
    create(custom, voicefinetune("doomed", deletionPolicy=policy))
    wait_for(lambda: jobs_of(cluster), what="the training Job")
    resource = wait_for(
        lambda: [o for o in cluster.objects(VFT) if o["metadata"].get("finalizers")], what="the finalizer"
    )[0]
    assert resource["metadata"]["finalizers"] == ["voicefinetune.io/cleanup"]
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "doomed")
    wait_for(lambda: not cluster.objects(VFT), what="the resource to go")
    assert not jobs_of(cluster)
    kept = storage.exists("checkpoints/doomed/model.safetensors")
    assert kept is (policy == "Retain")


def test_operator_for_one_namespace_calls_neither_namespaces_nor_crds(cluster, start_operator, custom):
    """`vft operator -n default`: no Namespace or CRD listing (stock KMock cannot serve /api/v1/namespaces, and the
    chart's RBAC does not grant either), and the resource still gets its Job."""
    start_operator(args=("-n", "default"))
    create(custom, voicefinetune("scoped"))
    wait_for(lambda: jobs_of(cluster), what="the training Job")
    called = {plural for _, plural in cluster.emulator.served}
    assert not called & {"namespaces", "customresourcedefinitions"}, called


def trainer_report(job: dict, core) -> tuple[str, dict[str, str]]:
    """Where the Job's trainer posts progress, and with which token (the Secret its environment names, as the
    kubelet would read it)."""
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["VFT_PROGRESS_TOKEN"]["valueFrom"]["secretKeyRef"]
    secret = core.read_namespaced_secret(ref["name"], job["metadata"]["namespace"])
    token = base64.b64decode(secret.data[ref["key"]]).decode()
    return env["VFT_PROGRESS_URL"]["value"], {"Authorization": f"Bearer {token}"}


def test_outside_a_cluster_trainers_reach_the_operator_with_default_settings_across_restarts(
    cluster, kubeconfig, start_operator, custom, core, tmp_path
):
    """No VFT_PROGRESS_BASE_URL and no VFT_OPERATOR_SECRET_KEY: Jobs report to 127.0.0.1, and the key kept under
    the data dir makes their tokens good for a restarted operator too."""
    env = operator_environment(kubeconfig, "http://127.0.0.1:9", {"VFT_DATA_DIR": str(tmp_path / "data")})
    for key in ("VFT_PROGRESS_BASE_URL", "VFT_OPERATOR_SECRET_KEY"):
        env.pop(key)
    first = start_operator(env=env)
    create(custom, voicefinetune("local"))
    (job,) = wait_for(lambda: jobs_of(cluster), what="the training Job")
    url, token = trainer_report(job, core)
    assert url == f"http://127.0.0.1:{env['VFT_OPERATOR_PORT']}/progress/default/local"
    first.stop()
    start_operator(env=env)
    event = {"stage": "training", "epoch": 0, "total_epochs": 2, "step": 1, "loss": 1.5, "global_step": 1}
    assert httpx.post(url, json=event, headers=token).status_code == 202
    assert wait_for(
        lambda: status_of(cluster, "local").get("progress", {}).get("globalStep") == 1, what="progress"
    )


def test_in_a_cluster_the_progress_key_lives_in_a_secret_the_operator_makes_once(
    cluster, kubeconfig, start_operator, custom, core, tmp_path
):
    """No VFT_OPERATOR_SECRET_KEY (the chart's default, so that `helm template` never rotates a key): the operator
    makes the Secret VFT_OPERATOR_KEY_SECRET names, and a restarted operator on an empty data dir still accepts
    the tokens of the Jobs made before."""
    env = operator_environment(
        kubeconfig,
        "http://127.0.0.1:9",
        {"VFT_OPERATOR_KEY_SECRET": "vft-operator-progress-key", "VFT_DATA_DIR": str(tmp_path / "first")},
    )
    env.pop("VFT_OPERATOR_SECRET_KEY")
    first = start_operator(env=env)
    create(custom, voicefinetune("keyed"))
    (job,) = wait_for(lambda: jobs_of(cluster), what="the training Job")
    kept = core.read_namespaced_secret("vft-operator-progress-key", "default")
    key = base64.b64decode(kept.data["secret-key"]).decode()
    url, token = trainer_report(job, core)
    assert token == {"Authorization": f"Bearer {progress_token(key, 'default', 'keyed')}"}
    first.stop()
    start_operator(env={**env, "VFT_DATA_DIR": str(tmp_path / "second")})
    event = {"stage": "training", "epoch": 0, "total_epochs": 2, "step": 1, "loss": 1.5, "global_step": 1}
    assert wait_for(
        lambda: _posted(url, event, token) == 202, what="the restarted operator accepting the token"
    )
    assert wait_for(
        lambda: status_of(cluster, "keyed").get("progress", {}).get("globalStep") == 1, what="progress"
    )
    again = core.read_namespaced_secret("vft-operator-progress-key", "default")
    assert again.data == kept.data


def _posted(url: str, event: dict, headers: dict[str, str]) -> int:
    try:
        return httpx.post(url, json=event, headers=headers).status_code
    except httpx.TransportError:  # the restarted operator is not listening yet
        return 0


def test_a_taken_port_falls_back_to_a_free_one_outside_a_cluster(cluster, kubeconfig, custom, core, tmp_path):
    env = operator_environment(kubeconfig, "http://127.0.0.1:9")
    env.pop("VFT_PROGRESS_BASE_URL")
    log = tmp_path / "operator.log"
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        env["VFT_OPERATOR_PORT"] = str(taken.getsockname()[1])
        process = subprocess.Popen(
            [VFT_BIN, "operator"],
            env=env,
            stdout=open(log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        try:
            create(custom, voicefinetune("elsewhere"))
            (job,) = wait_for(lambda: jobs_of(cluster), timeout=60, what="the training Job")
            url, token = trainer_report(job, core)
            assert f":{env['VFT_OPERATOR_PORT']}/" not in url, url
            event = {
                "stage": "preparing",
                "epoch": 0,
                "total_epochs": 2,
                "step": 0,
                "loss": None,
                "global_step": 0,
            }
            assert httpx.post(url, json=event, headers=token).status_code == 202
            assert "is taken" in log.read_text()
        finally:
            process.terminate()
            process.wait(15)
