"""The operator as a platform team runs it: restarts that find a Job gone, two operator processes at once (a
Lease elects one), private registries, an autoscaled inference Deployment, server-side watch filters."""

from __future__ import annotations

import concurrent.futures
import subprocess
import time

import httpx
import kubernetes
from prometheus_client.parser import text_string_to_metric_families
from voicefinetune_operator.handlers import JOB_SELECTOR, POD_SELECTOR

from tests.helpers.chart import of_kind, render
from tests.helpers.k8s_harness import (
    GROUP,
    JOBS,
    PLURAL,
    VERSION,
    VFT,
    VFT_BIN,
    mark_job,
    operator_environment,
    voicefinetune,
    wait_for,
)


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def create(custom: kubernetes.client.CustomObjectsApi, name: str) -> dict:
    return custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, voicefinetune(name))


def status_of(cluster, name: str) -> dict:
    found = [o for o in cluster.objects(VFT) if o["metadata"]["name"] == name]
    return (found[0].get("status") or {}) if found else {}


def jobs_for(cluster, name: str) -> list[dict]:
    return [j for j in cluster.objects(JOBS) if j["metadata"]["ownerReferences"][0]["name"] == name]


def test_a_job_deleted_while_the_operator_is_away_fails_the_resource_without_a_new_job(
    cluster, kubeconfig, start_operator, custom, batch
):
    env = operator_environment(kubeconfig, "http://127.0.0.1:9")
    first = start_operator(env=env)
    create(custom, "orphan")
    (job,) = wait_for(lambda: cluster.objects(JOBS), what="the training Job")
    wait_for(lambda: status_of(cluster, "orphan").get("phase") == "Queued", what="phase Queued")
    first.stop()
    batch.delete_namespaced_job(job["metadata"]["name"], "default")
    wait_for(lambda: not cluster.objects(JOBS), what="the Job to go")
    second = start_operator(env=env)
    status = wait_for(
        lambda: status_of(cluster, "orphan").get("phase") == "Failed" and status_of(cluster, "orphan"),
        what="phase Failed",
    )
    wait_for(lambda: second.reconciled("resume") >= 1, what="the resume handler to finish")
    assert not cluster.objects(JOBS)
    assert job["metadata"]["name"] in status["error"] and "gone" in status["error"]
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "JobDeleted")


def test_two_operators_one_acts_and_the_other_takes_over_when_it_is_killed(
    cluster, kubeconfig, start_operator, custom
):
    operators = [
        start_operator(
            env=operator_environment(kubeconfig, "http://127.0.0.1:9", {"VFT_LEASE_DURATION": "4"})
        )
        for _ in range(2)
    ]
    names = [f"burst-{i}" for i in range(10)]
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda n: create(custom, n), names))
    wait_for(
        lambda: sum(o.reconciled("create") for o in operators) >= 10, timeout=90, what="10 create handlers"
    )
    jobs = cluster.objects(JOBS)
    assert sorted(j["metadata"]["ownerReferences"][0]["name"] for j in jobs) == names
    counts = [o.reconciled("create") for o in operators]
    assert sorted(counts) == [0, 10], counts  # exactly one operator acted
    active, standby = (operators[0], operators[1]) if counts[0] else (operators[1], operators[0])
    (lease,) = cluster.objects("coordination.k8s.io/v1/leases")
    assert lease["spec"]["holderIdentity"]

    active.process.kill()  # no clean stop: the Lease must expire
    active.process.wait(10)
    create(custom, "after-failover")
    wait_for(
        lambda: jobs_for(cluster, "after-failover"),
        timeout=60,
        what="the new resource's Job from the standby",
    )
    wait_for(lambda: standby.reconciled("create") >= 1, timeout=30, what="the standby's create handler")
    assert len(jobs_for(cluster, "after-failover")) == 1 and len(cluster.objects(JOBS)) == 11
    (lease,) = cluster.objects("coordination.k8s.io/v1/leases")
    assert lease["spec"]["leaseTransitions"] >= 1


def test_image_pull_secrets_from_the_chart_reach_the_job_and_the_inference_deployment(
    cluster, kubeconfig, start_operator, custom
):
    (config,) = [
        c
        for c in of_kind(render("--set", "imagePullSecrets[0].name=regcred"), "ConfigMap")
        if c["metadata"]["name"] == "vft-voicefinetune-operator"
    ]
    pull = config["data"]["VFT_IMAGE_PULL_SECRETS"]
    start_operator(
        env=operator_environment(kubeconfig, "http://127.0.0.1:9", {"VFT_IMAGE_PULL_SECRETS": pull})
    )
    create(custom, "private")
    (job,) = wait_for(lambda: cluster.objects(JOBS), what="the training Job")
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    (deployment,) = wait_for(lambda: cluster.objects("apps/v1/deployments"), what="the inference Deployment")
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_with_autoscaling_a_replicas_change_survives_the_repair_loop(
    cluster, kubeconfig, start_operator, client
):
    start_operator(
        env=operator_environment(kubeconfig, "http://127.0.0.1:9", {"VFT_INFERENCE_AUTOSCALING": "1"})
    )
    apps = kubernetes.client.AppsV1Api(client)
    (deployment,) = wait_for(lambda: cluster.objects("apps/v1/deployments"), what="the inference Deployment")
    assert deployment["spec"]["replicas"] == 1
    # The HPA scales; someone also edits the image, which the keeper does repair: once the image is back, a
    # repair round has run after the scale.
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    apps.patch_namespaced_deployment(
        "voicefinetune-inference",
        "default",
        {
            "spec": {
                "replicas": 3,
                "template": {"spec": {"containers": [{**container, "image": "someone/else:1"}]}},
            }
        },
    )
    repaired = wait_for(
        lambda: (
            cluster.objects("apps/v1/deployments")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
            == container["image"]
            and cluster.objects("apps/v1/deployments")[0]
        ),
        what="the image patched back",
    )
    assert repaired["spec"]["replicas"] == 3
    requests = repaired["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests["cpu"] == "1"


def test_jobs_and_pods_are_watched_with_server_side_label_selectors(cluster, start_operator, custom):
    start_operator()
    create(custom, "filtered")
    wait_for(lambda: cluster.objects(JOBS), what="the training Job")
    selectors = cluster.emulator.selectors
    wait_for(
        lambda: JOB_SELECTOR in selectors["jobs"] and POD_SELECTOR in selectors["pods"],
        what="the Job and Pod watches",
    )
    assert selectors["jobs"] | selectors["pods"] <= {
        JOB_SELECTOR,
        POD_SELECTOR,
        *(f"batch.kubernetes.io/job-name={j['metadata']['name']}" for j in cluster.objects(JOBS)),
    }


async def test_a_status_write_decided_on_a_stale_read_cannot_move_the_phase_back(kubeconfig, custom):
    """Another operator moved the resource on (Training -> Loading) between this writer's read and its write: the
    resourceVersion precondition makes it read again, and the late progress report changes nothing."""
    from voicefinetune_operator.events import EventRecorder
    from voicefinetune_operator.status_writer import StatusWriter

    from voicefinetune.cluster.client import KubeClient
    from voicefinetune.cluster.resource import object_path

    create(custom, "racy")
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "racy", {"status": {"phase": "Training"}}
    )
    kube = await KubeClient.connect(str(kubeconfig))
    try:
        stale = await kube.get(object_path("default", "racy"))
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, "default", PLURAL, "racy", {"status": {"phase": "Loading"}}
        )
        real_get, reads = kube.get, []

        async def get_stale_first(path: str):
            reads.append(path)
            return stale if len(reads) == 1 else await real_get(path)

        kube.get = get_stale_first
        writer = StatusWriter(kube, EventRecorder(kube))
        assert (
            await writer.progress("default", "racy", {"stage": "training", "epoch": 1, "global_step": 5})
            is False
        )
        assert len(reads) == 2  # the conflict made it read again
        kube.get = real_get
        current = await kube.get(object_path("default", "racy"))
        assert current["status"] == {"phase": "Loading"}
    finally:
        await kube.close()


def failed_count(operator) -> float:
    text = httpx.get(f"{operator.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vft_operator_training_job_duration_seconds_count" and sample.labels == {
                "outcome": "failed",
            }:
                return sample.value
    return -1.0


def test_a_restarted_operator_does_not_count_failed_jobs_again(
    cluster, kubeconfig, start_operator, custom, batch
):
    env = operator_environment(kubeconfig, "http://127.0.0.1:9")
    first = start_operator(env=env)
    started = utc_now()
    wait_for(lambda: utc_now() > started, what="the next second")  # the Job ends after the operator started
    create(custom, "broken")
    (job,) = wait_for(lambda: cluster.objects(JOBS), what="the training Job")
    mark_job(batch, job["metadata"]["name"], outcome="Failed", reason="BackoffLimitExceeded")
    ended = utc_now()
    wait_for(lambda: status_of(cluster, "broken").get("phase") == "Failed", what="phase Failed")
    assert wait_for(lambda: failed_count(first) == 1, what="the failed Job timed once")
    first.stop()
    wait_for(lambda: utc_now() > ended, what="the next second")
    second = start_operator(env=env)
    wait_for(lambda: second.reconciled("job") >= 1, what="the restarted operator to see the Job")
    assert failed_count(second) == 0


def test_releasing_finalizers_lets_resources_delete_with_and_without_an_operator(
    cluster, kubeconfig, start_operator, custom, tmp_path
):
    """What the chart's pre-delete hook runs (`vft operator --release-finalizers`): a running operator does not put
    the finalizer back, and once it is gone a deletion does not hang."""
    operator = start_operator()
    for name in ("kept-a", "kept-b"):
        create(custom, name)
    wait_for(
        lambda: len([o for o in cluster.objects(VFT) if o["metadata"].get("finalizers")]) == 2,
        what="both finalizers",
    )
    env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    released = subprocess.run(
        [VFT_BIN, "operator", "--release-finalizers", "-n", "default"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert released.returncode == 0, released.stderr
    assert "released 2 VoiceFinetune(s)" in released.stdout
    for resource in cluster.objects(VFT):
        assert not resource["metadata"].get("finalizers")
        assert resource["metadata"]["annotations"]["voicefinetune.io/released"] == "true"
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "kept-a")
    wait_for(lambda: [o["metadata"]["name"] for o in cluster.objects(VFT)] == ["kept-b"], what="kept-a to go")
    assert operator.reconciled("delete") == 0
    operator.stop()
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "kept-b")
    wait_for(lambda: not cluster.objects(VFT), what="kept-b to go without an operator")


def test_an_inference_deployment_without_the_release_label_is_replaced_once(
    cluster, kubeconfig, start_operator, client
):
    """Deployment selectors cannot change: one made before the release label joined the selector is replaced."""
    apps = kubernetes.client.AppsV1Api(client)
    old_selector = {"app.kubernetes.io/name": "voicefinetune", "app.kubernetes.io/component": "inference"}
    apps.create_namespaced_deployment(
        "default",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "voicefinetune-inference"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": old_selector},
                "template": {
                    "metadata": {"labels": old_selector},
                    "spec": {"containers": [{"name": "inference", "image": "old"}]},
                },
            },
        },
    )
    start_operator(env=operator_environment(kubeconfig, "http://127.0.0.1:9", {"VFT_INSTANCE": "vft"}))
    replaced = wait_for(
        lambda: [
            d
            for d in cluster.objects("apps/v1/deployments")
            if d["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/instance") == "vft"
        ],
        what="the Deployment with the release label",
    )[0]
    assert replaced["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == "vft"
    (service,) = wait_for(lambda: cluster.objects("v1/services"), what="the inference Service")
    assert service["spec"]["selector"]["app.kubernetes.io/instance"] == "vft"


def test_a_spec_edited_after_creation_is_not_claimed_as_observed(cluster, start_operator, custom):
    """The CRD refuses spec edits (CEL); where nothing validates (this emulator), the operator keeps training with the
    spec it started with and ``observedGeneration`` keeps saying so."""
    from voicefinetune_operator.progress import progress_token

    operator = start_operator()
    create(custom, "edited")
    wait_for(lambda: status_of(cluster, "edited").get("phase") == "Queued", what="phase Queued")
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "edited", {"spec": {"numEpochs": 99}}
    )
    wait_for(
        lambda: [o for o in cluster.objects(VFT) if o["metadata"]["generation"] == 2], what="generation 2"
    )
    token = {"Authorization": f"Bearer {progress_token('test-secret-key', 'default', 'edited')}"}
    event = {"stage": "training", "epoch": 0, "total_epochs": 15, "step": 1, "loss": 1.0, "global_step": 1}
    assert httpx.post(f"{operator.url}/progress/default/edited", json=event, headers=token).status_code == 202
    status = wait_for(
        lambda: status_of(cluster, "edited").get("phase") == "Training" and status_of(cluster, "edited"),
        what="phase Training",
    )
    assert status["observedGeneration"] == 1
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])
