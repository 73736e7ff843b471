"""A VoiceFinetune may not pick its own trainer image or nodes unless the operator's configuration allows it."""

from __future__ import annotations

from tests.helpers.k8s_harness import (
    GROUP,
    JOBS,
    PLURAL,
    VERSION,
    VFT,
    operator_environment,
    voicefinetune,
    wait_for,
)


def status_of(cluster, name: str) -> dict:
    objects = [o for o in cluster.objects(VFT) if o["metadata"]["name"] == name]
    return (objects[0].get("status") or {}) if objects else {}


def failed(cluster, name: str) -> dict:
    return wait_for(
        lambda: status_of(cluster, name).get("phase") == "Failed" and status_of(cluster, name),
        what=f"{name} Failed",
    )


def test_foreign_images_and_scheduling_are_refused_by_default(cluster, start_operator, custom):
    start_operator()
    for body in (
        voicefinetune("evil-image", trainerImage="docker.io/attacker/miner:latest"),
        voicefinetune("own-nodes", nodeSelector={"pool": "a100"}),
        voicefinetune("own-tolerations", tolerations=[{"operator": "Exists"}]),
        voicefinetune("plain"),
    ):
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
    assert (
        "spec.trainerImage 'docker.io/attacker/miner:latest' is not allowed"
        in failed(cluster, "evil-image")["error"]
    )
    assert "spec.nodeSelector is not allowed" in failed(cluster, "own-nodes")["error"]
    assert "spec.tolerations is not allowed" in failed(cluster, "own-tolerations")["error"]
    jobs = wait_for(lambda: cluster.objects(JOBS), what="the plain resource's Job")
    assert [job["metadata"]["name"] for job in jobs] == ["vft-train-plain"]


def test_allowed_prefixes_and_overrides_pass(cluster, kubeconfig, start_operator, custom):
    env = operator_environment(
        kubeconfig,
        "http://127.0.0.1:9",
        {
            "VFT_TRAINER_IMAGE_PREFIXES": "registry.internal/voices/",
            "VFT_ALLOW_SCHEDULING_OVERRIDES": "1",
        },
    )
    start_operator(env=env)
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        voicefinetune(
            "custom",
            trainerImage="registry.internal/voices/trainer:2",
            nodeSelector={"pool": "a100"},
        ),
    )
    (job,) = wait_for(lambda: cluster.objects(JOBS), what="the Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.internal/voices/trainer:2"
    assert pod["nodeSelector"] == {"pool": "a100"}
