"""The operator with two real `vft inference` replicas: preload on the voice's owner, registration everywhere, a
replica that comes back empty, unregistering from every replica; loads that fail or time out; the pods the
operator makes run as non-root."""

from __future__ import annotations

import socket

import httpx
import kubernetes

from tests.helpers.k8s_harness import (
    GROUP,
    JOBS,
    PLURAL,
    VERSION,
    VFT,
    VFT_BIN,
    Process,
    mark_job,
    operator_environment,
    play_training_pod,
    voicefinetune,
    wait_for,
)
from voicefinetune.cluster.routing import rendezvous_order
from voicefinetune.devtools.sample_data import make_dataset_zip

S3_KEYS = ("E2E_ACCESS_KEY", "E2E_SECRET_KEY", "E2E_BUCKET", "E2E_ENDPOINT_URL")
DATASET = "datasets/Hero1/dataset.zip"


def create(custom: kubernetes.client.CustomObjectsApi, name: str) -> dict:
    body = voicefinetune(name, numEpochs=1, batchSize=2)
    return custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)


def status_of(cluster, name: str) -> dict:
    found = [o for o in cluster.objects(VFT) if o["metadata"]["name"] == name]
    return (found[0].get("status") or {}) if found else {}


def voices_on(url: str) -> dict[str, dict]:
    return {v["job_id"]: v for v in httpx.get(f"{url}/voices", timeout=10).json()}


def by_name(url: str) -> str:
    """``url`` with this machine's host name instead of 127.0.0.1 when that name resolves there: the operator then
    finds the replica by a DNS lookup, as it finds the replicas behind the headless Service's name."""
    host = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, socket.AF_INET)}
    except OSError:
        return url
    return url.replace("127.0.0.1", host) if addresses == {"127.0.0.1"} else url


def test_two_replicas_preload_on_the_owner_survive_a_restart_and_unregister_everywhere(
    cluster,
    kubeconfig,
    start_operator,
    services,
    custom,
    batch,
    core,
    settings_env,
    storage,
    tiny_models,
    tmp_path,
):
    storage.upload_file(make_dataset_zip(tmp_path / "dataset.zip", count=4), DATASET)
    s3 = {key: settings_env[key] for key in S3_KEYS}
    replicas = [
        services(
            ["inference"], {**settings_env, "VFT_DATA_DIR": str(tmp_path / f"replica-{i}")}, f"replica-{i}"
        )
        for i in range(2)
    ]
    urls = [replica.url for replica in replicas]
    start_operator(env=operator_environment(kubeconfig, ",".join(urls), {**s3, "VFT_MANAGE_INFERENCE": "0"}))
    for replica in replicas:
        replica.wait_healthy()
    create(custom, "fleet")
    (job,) = wait_for(lambda: cluster.objects(JOBS), what="the training Job")
    play_training_pod(
        job,
        s3,
        tiny_models_root=tiny_models.root,
        data_dir=tmp_path / "trainer-pod",
        hf_home=tmp_path / "hf",
        core=core,
    )
    mark_job(batch, job["metadata"]["name"], outcome="Complete")
    wait_for(lambda: status_of(cluster, "fleet").get("phase") == "Ready", timeout=120, what="phase Ready")

    owner, other = rendezvous_order("fleet", urls)
    assert voices_on(owner)["fleet"]["loaded"] is True
    assert voices_on(other)["fleet"]["loaded"] is False  # registered, not preloaded
    ready = {c["type"]: c for c in status_of(cluster, "fleet")["conditions"]}["VoiceLoaded"]
    assert owner in ready["message"]

    # The other replica is rescheduled: it comes back with an empty registry and the keeper registers the voice.
    gone = next(replica for replica in replicas if replica.url == other)
    gone.stop()
    port = other.rsplit(":", 1)[1]
    back = Process(
        [VFT_BIN, "inference", "--host", "127.0.0.1", "--port", port],
        {**settings_env, "VFT_DATA_DIR": str(tmp_path / "replica-back")},
        tmp_path / "replica-back.log",
        other,
    )
    try:
        back.wait_healthy()
        wait_for(
            lambda: "fleet" in voices_on(other),
            timeout=60,
            what="the voice registered again on the new replica",
        )

        custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "fleet")
        wait_for(lambda: not cluster.objects(VFT), timeout=60, what="the resource to go")
        assert "fleet" not in voices_on(owner) and "fleet" not in voices_on(other)
    finally:
        back.stop()
    # VFT_MANAGE_INFERENCE=0: the replicas are someone else's; the operator made no Deployment or Service.
    assert not cluster.objects("apps/v1/deployments") and not cluster.objects("v1/services")


def test_a_voice_that_cannot_load_within_the_load_timeout_fails(
    cluster, kubeconfig, start_operator, custom, batch
):
    start_operator(env=operator_environment(kubeconfig, "http://127.0.0.1:9", {"VFT_LOAD_TIMEOUT": "2"}))
    create(custom, "unloadable")
    (job,) = wait_for(lambda: cluster.objects(JOBS), what="the training Job")
    mark_job(batch, job["metadata"]["name"], outcome="Complete")
    status = wait_for(
        lambda: (
            status_of(cluster, "unloadable").get("phase") == "Failed" and status_of(cluster, "unloadable")
        ),
        timeout=60,
        what="phase Failed",
    )
    assert "VFT_LOAD_TIMEOUT=2 s" in status["error"]
    loaded = {c["type"]: c for c in status["conditions"]}["VoiceLoaded"]
    assert (loaded["status"], loaded["reason"]) == ("False", "LoadFailed")


def test_a_checkpoint_the_replica_refuses_fails_the_resource(
    cluster, kubeconfig, start_operator, services, custom, batch, settings_env, storage, tmp_path
):
    storage.ensure_bucket()
    replica = services(["inference"], {**settings_env, "VFT_DATA_DIR": str(tmp_path / "replica")}, "replica")
    s3 = {key: settings_env[key] for key in S3_KEYS}
    start_operator(env=operator_environment(kubeconfig, by_name(replica.url), s3))
    replica.wait_healthy()
    create(custom, "empty")
    (job,) = wait_for(lambda: cluster.objects(JOBS), what="the training Job")
    mark_job(batch, job["metadata"]["name"], outcome="Complete")  # "succeeded" without writing a checkpoint
    status = wait_for(
        lambda: status_of(cluster, "empty").get("phase") == "Failed" and status_of(cluster, "empty"),
        timeout=90,
        what="phase Failed",
    )
    loaded = {c["type"]: c for c in status["conditions"]}["VoiceLoaded"]
    assert (loaded["status"], loaded["reason"]) == ("False", "LoadFailed")
    assert "empty" in status["error"] and replica.url in status["error"]  # the replica its name resolved to


def test_pods_the_operator_creates_run_as_non_root(cluster, start_operator, custom):
    start_operator()
    create(custom, "rootless")
    (job,) = wait_for(lambda: cluster.objects(JOBS), what="the training Job")
    (deployment,) = wait_for(lambda: cluster.objects("apps/v1/deployments"), what="the inference Deployment")
    for pod in (job["spec"]["template"]["spec"], deployment["spec"]["template"]["spec"]):
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"].get("runAsUser") != 0
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
