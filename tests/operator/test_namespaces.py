"""Several namespaces, one operator (cluster-wide, in `default`): namespace-qualified identity, the S3 Secret
reaching the training pods of other namespaces, and pods that cannot start said on their resource."""

from __future__ import annotations

import httpx
import kubernetes
import pytest

from tests.helpers.k8s_harness import (
    GROUP,
    JOBS,
    PLURAL,
    VERSION,
    VFT,
    mark_job,
    operator_environment,
    play_training_pod,
    wait_for,
)
from voicefinetune.cluster.identity import voice_id
from voicefinetune.devtools.sample_data import make_dataset_zip

S3_KEYS = ("E2E_ACCESS_KEY", "E2E_SECRET_KEY", "E2E_BUCKET", "E2E_ENDPOINT_URL")
DATASET = "datasets/Hero1/dataset.zip"


def create_in(custom: kubernetes.client.CustomObjectsApi, namespace: str, name: str, **spec) -> dict:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VoiceFinetune",
        "metadata": {"name": name},
        "spec": {
            "datasetS3Key": DATASET,
            "speakerName": "hero_voice",
            "numEpochs": 1,
            "batchSize": 2,
            **spec,
        },
    }
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def resource(cluster, namespace: str, name: str) -> dict:
    found = [o for o in cluster.objects(VFT, namespace) if o["metadata"]["name"] == name]
    return found[0] if found else {}


def job_of(cluster, namespace: str) -> dict:
    (job,) = wait_for(lambda: cluster.objects(JOBS, namespace), what=f"the training Job in {namespace}")
    return job


def s3_secret(core: kubernetes.client.CoreV1Api, namespace: str = "default") -> None:
    core.create_namespaced_secret(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "voicefinetune-s3"},
            "data": {"E2E_ACCESS_KEY": "dGVzdGluZw==", "E2E_SECRET_KEY": "dGVzdGluZw==", "unrelated": "eA=="},
        },
    )


def test_identity_is_the_bare_name_at_home_and_qualified_elsewhere():
    assert voice_id("default", "hero", home="default") == "hero"
    team_a, team_b = voice_id("team-a", "hero", home="default"), voice_id("team-b", "hero", home="default")
    assert team_a.startswith("team-a--hero-") and team_b.startswith("team-b--hero-") and team_a != team_b
    assert voice_id("team-a", "hero", home="default") == team_a  # deterministic
    assert voice_id("default", "team-a--hero", home="default") != team_a
    long = voice_id("a" * 60, "b" * 200, home="default")
    assert len(long) <= 63 and long != voice_id("a" * 60, "b" * 199, home="default")
    assert voice_id("team-a", "hero", home="default", qualify=False) == "hero"  # one namespace served


def test_the_training_job_trains_into_the_qualified_prefix_only_when_several_namespaces_are_served():
    from voicefinetune_operator.config import OperatorConfig
    from voicefinetune_operator.crd import read_spec
    from voicefinetune_operator.jobs import build_training_job

    from voicefinetune.settings import Settings

    body = {
        "metadata": {"name": "hero", "namespace": "team-a", "uid": "u"},
        "spec": {"datasetS3Key": DATASET, "speakerName": "hero_voice"},
    }

    def job_id(**config) -> str:
        job = build_training_job(
            body,
            read_spec(body),
            config=OperatorConfig(settings=Settings(), secret_key="k", **config),
            progress_url="http://op/progress/team-a/hero",
            progress_secret="progress-secret",
        )
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        return args[args.index("--job-id") + 1]

    assert job_id(namespaced_ids=True) == voice_id("team-a", "hero", home="default")
    assert job_id(namespaced_ids=True, namespace="team-a") == "hero"
    assert job_id() == "hero"


def test_same_name_in_two_namespaces_trains_and_serves_apart(
    cluster,
    kubeconfig,
    start_operator,
    services,
    custom,
    core,
    batch,
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
    s3_secret(core)
    start_operator(env=operator_environment(kubeconfig, inference.url, s3))
    inference.wait_healthy()
    voices = {}
    for namespace in ("team-a", "team-b"):
        create_in(custom, namespace, "hero", deletionPolicy="Delete")
        job = job_of(cluster, namespace)
        play_training_pod(
            job,
            s3,
            tiny_models_root=tiny_models.root,
            data_dir=tmp_path / f"{namespace}-pod",
            hf_home=tmp_path / "hf",
            core=core,
        )
        mark_job(batch, job["metadata"]["name"], outcome="Complete", namespace=namespace)
        status = wait_for(
            lambda ns=namespace: (
                resource(cluster, ns, "hero").get("status", {}).get("phase") == "Ready"
                and resource(cluster, ns, "hero")["status"]
            ),
            timeout=120,
            what=f"{namespace}/hero Ready",
        )
        voices[namespace] = voice_id(namespace, "hero", home="default")
        assert status["checkpointPath"] == f"checkpoints/{voices[namespace]}"
        assert status["inferenceUrl"] == f"/infer/{voices[namespace]}"
    assert voices["team-a"] != voices["team-b"]
    assert list(storage.list(f"checkpoints/{voices['team-a']}/")) and list(
        storage.list(f"checkpoints/{voices['team-b']}/")
    )
    assert {voices["team-a"], voices["team-b"]} <= {
        v["job_id"] for v in httpx.get(f"{inference.url}/voices").json()
    }

    custom.delete_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL, "hero")
    wait_for(lambda: not cluster.objects(VFT, "team-a"), timeout=60, what="team-a/hero to go")
    registered = {v["job_id"] for v in httpx.get(f"{inference.url}/voices").json()}
    assert voices["team-a"] not in registered and voices["team-b"] in registered
    assert not list(storage.list(f"checkpoints/{voices['team-a']}/"))
    assert list(storage.list(f"checkpoints/{voices['team-b']}/")), "the other namespace's checkpoint stays"
    assert resource(cluster, "team-b", "hero")["status"]["phase"] == "Ready"


def test_the_s3_secret_is_copied_into_the_resources_namespace_and_owned_by_it(
    cluster, start_operator, custom, core
):
    s3_secret(core)
    start_operator()
    created = create_in(custom, "team-a", "hero")
    job = job_of(cluster, "team-a")
    secrets = {s["metadata"]["name"]: s for s in cluster.objects("v1/secrets", "team-a")}
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    referenced = {e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e}
    assert referenced and referenced <= set(secrets)
    s3_copies = {
        e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e and e["name"] in S3_KEYS
    }
    assert len(s3_copies) == 1
    for name in referenced:
        (owner,) = secrets[name]["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "VoiceFinetune",
            "hero",
            created["metadata"]["uid"],
        )
    assert secrets[s3_copies.pop()]["data"] == {
        "E2E_ACCESS_KEY": "dGVzdGluZw==",
        "E2E_SECRET_KEY": "dGVzdGluZw==",
    }
    assert wait_for(
        lambda: resource(cluster, "team-a", "hero").get("status", {}).get("phase") == "Queued",
        what="phase Queued",
    )


def test_without_a_secret_to_copy_the_pod_reads_its_namespaces_own_and_a_missing_one_is_said(
    cluster, start_operator, custom, core
):
    """No S3 Secret in the operator's namespace (an operator run outside the chart): the pod references the
    configured name in its own namespace; when that is missing too, the resource says so within a minute."""
    start_operator()
    create_in(custom, "team-a", "hero")
    job = job_of(cluster, "team-a")
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e and e["name"] in S3_KEYS
    } == {"voicefinetune-s3"}
    # Only the resource's progress-token Secret was made there: no S3 copy.
    assert all("-progress-" in s["metadata"]["name"] for s in cluster.objects("v1/secrets", "team-a"))
    core.create_namespaced_pod("team-a", trainer_pod(job, WAITING["CreateContainerConfigError"]))
    status = wait_for(
        lambda: (
            "voicefinetune-s3" in (resource(cluster, "team-a", "hero")["status"].get("error") or "")
            and resource(cluster, "team-a", "hero")["status"]
        ),
        timeout=60,
        what="the missing Secret said",
    )
    assert "CreateContainerConfigError" in status["error"]
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "CreateContainerConfigError")


def trainer_pod(job: dict, status: dict) -> dict:
    name = job["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-x7k2p",
            "labels": {
                **job["spec"]["template"]["metadata"]["labels"],
                "batch.kubernetes.io/job-name": name,
                "job-name": name,
            },
        },
        "spec": job["spec"]["template"]["spec"],
        "status": status,
    }


WAITING = {
    "CreateContainerConfigError": {
        "phase": "Pending",
        "containerStatuses": [
            {
                "name": "trainer",
                "ready": False,
                "restartCount": 0,
                "image": "trainer",
                "imageID": "",
                "state": {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": 'secret "voicefinetune-s3" not found',
                    }
                },
            }
        ],
    },
    "ImagePullBackOff": {
        "phase": "Pending",
        "containerStatuses": [
            {
                "name": "trainer",
                "ready": False,
                "restartCount": 0,
                "image": "trainer",
                "imageID": "",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
            }
        ],
    },
    "Unschedulable": {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            }
        ],
    },
}


@pytest.mark.parametrize("reason", WAITING)
def test_a_pod_that_cannot_start_is_said_in_status_and_a_condition(
    reason, cluster, start_operator, custom, core
):
    start_operator()
    create_in(custom, "default", "stuck")
    job = job_of(cluster, "default")
    wait_for(
        lambda: resource(cluster, "default", "stuck").get("status", {}).get("phase") == "Queued",
        what="phase Queued",
    )
    core.create_namespaced_pod("default", trainer_pod(job, WAITING[reason]))
    status = wait_for(
        lambda: (
            reason in (resource(cluster, "default", "stuck")["status"].get("error") or "")
            and resource(cluster, "default", "stuck")["status"]
        ),
        timeout=60,
        what=f"status.error {reason}",
    )
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["TrainingPodReady"]["status"], conditions["TrainingPodReady"]["reason"]) == (
        "False",
        reason,
    )
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", reason)
    assert status["phase"] == "Queued"
    events = wait_for(
        lambda: [e for e in cluster.objects("v1/events") if e["reason"] == reason], what="the Event"
    )
    assert events[0]["type"] == "Warning"
