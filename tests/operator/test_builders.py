"""The operator's plain functions: the training Job, its outcome, the inference objects and drift, the status
rules, and voice routing."""

from __future__ import annotations

import asyncio
import collections
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from voicefinetune_operator.config import OperatorConfig
from voicefinetune_operator.crd import InvalidSpec, read_spec
from voicefinetune_operator.inference import build_inference_deployment, build_inference_service, drift
from voicefinetune_operator.jobs import (
    build_training_job,
    job_name,
    job_outcome,
    resource_of,
    termination_message,
)
from voicefinetune_operator.placement import placement
from voicefinetune_operator.progress_key import progress_key
from voicefinetune_operator.status import may_advance, merge_conditions, phase_conditions, progress_status

from tests.helpers.chart import of_kind, render
from voicefinetune.cluster.routing import pick, rendezvous_order
from voicefinetune.settings import Settings

CONFIG = OperatorConfig(settings=Settings(), secret_key="k")


def resource(name: str = "hero", labels: dict | None = None, **spec) -> dict:
    return {
        "apiVersion": "voicefinetune.io/v1alpha1",
        "kind": "VoiceFinetune",
        "metadata": {"name": name, "namespace": "voices", "uid": "u-1", "labels": labels or {}},
        "spec": {"datasetS3Key": "datasets/Hero1/dataset.zip", "speakerName": "hero_voice", **spec},
    }


def training_job(body: dict, config: OperatorConfig = CONFIG) -> dict:
    return build_training_job(
        body,
        read_spec(body),
        config=config,
        progress_url="http://op:8081/progress/voices/hero",
        progress_secret="progress-secret",
    )


def test_job_names_are_deterministic_and_fit_a_label():
    assert job_name("hero") == "vft-train-hero" == job_name("hero")
    long_a, long_b = "a" * 60 + "-one", "a" * 60 + "-two"
    assert len(job_name(long_a)) <= 63 and job_name(long_a) != job_name(long_b)
    assert job_name(long_a) == job_name(long_a)
    assert not job_name("x" * 53 + "." + "y" * 20).endswith((".", "-"))


def test_training_job_passes_accumulation_language_and_the_training_recipe():
    pod = training_job(resource(gradientAccumulationSteps=4, language="German"))["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][container["args"].index("--gradient-accumulation-steps") + 1] == "4"
    assert container["args"][container["args"].index("--language") + 1] == "German"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["VFT_TRAIN_RECIPE"], env["VFT_TRAIN_FIT_CHECK"]) == ("compact", "1")
    defaults = training_job(resource())["spec"]["template"]["spec"]["containers"][0]["args"]
    assert defaults[defaults.index("--gradient-accumulation-steps") + 1] == "1"
    assert defaults[defaults.index("--language") + 1] == "English"


def test_training_job_passes_the_method_and_the_lora_settings():
    body = resource(method="lora", loraRank=4, loraAlpha=6, loraTargets=["q_proj", "v_proj"])
    args = training_job(body)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--method") :] == [
        "--method",
        "lora",
        "--lora-rank",
        "4",
        "--progress-url",
        "http://op:8081/progress/voices/hero",
        "--lora-alpha",
        "6",
        "--lora-targets",
        "q_proj,v_proj",
    ]
    defaults = training_job(resource())["spec"]["template"]["spec"]["containers"][0]["args"]
    assert defaults[defaults.index("--method") : defaults.index("--method") + 4] == [
        "--method",
        "full",
        "--lora-rank",
        "16",
    ]
    assert "--lora-alpha" not in defaults and "--lora-targets" not in defaults


def test_training_job_runs_vft_train_with_the_spec_and_the_defaults():
    job = training_job(resource(numEpochs=3, lr=2e-6, resumeJobId="old-voice"))
    meta, spec = job["metadata"], job["spec"]
    assert meta["name"] == "vft-train-hero" and meta["namespace"] == "voices"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "voicefinetune.io/v1alpha1",
            "kind": "VoiceFinetune",
            "name": "hero",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (
        1,
        86400,
        86400,
    )
    assert "suspend" not in spec
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    (container,) = pod["containers"]
    assert container["command"] == ["vft", "train"]
    args = container["args"]
    assert args[args.index("--job-id") + 1] == "hero"
    assert args[args.index("--dataset") + 1] == "datasets/Hero1/dataset.zip"
    assert args[args.index("--speaker-name") + 1] == "hero_voice"
    assert args[args.index("--num-epochs") + 1] == "3" and args[args.index("--batch-size") + 1] == "2"
    assert float(args[args.index("--lr") + 1]) == 2e-6
    assert args[args.index("--resume-from") + 1] == "checkpoints/old-voice"
    assert args[args.index("--progress-url") + 1] == "http://op:8081/progress/voices/hero"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in container["env"]}
    assert env["PYTORCH_CUDA_ALLOC_CONF"]["value"] == "expandable_segments:True"
    # The token is read from its Secret, never written into the Job spec.
    assert env["VFT_PROGRESS_TOKEN"] == {
        "name": "VFT_PROGRESS_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "progress-secret", "key": "token"}},
    }
    for key in ("E2E_ACCESS_KEY", "E2E_SECRET_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "voicefinetune-s3" and "value" not in env[key]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_scheduling_comes_from_the_spec_else_the_operator():
    custom = training_job(
        resource(
            gpus=2,
            nodeSelector={"pool": "a100"},
            tolerations=[],
            trainerImage="my/trainer:1",
            queueName="team-queue",
        )
    )
    pod = custom["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "a100"} and pod["tolerations"] == []
    assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert pod["containers"][0]["image"] == "my/trainer:1"
    assert custom["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-queue"
    assert custom["spec"]["suspend"] is True  # Kueue admits it
    by_label = training_job(resource(labels={"kueue.x-k8s.io/queue-name": "q2"}))
    assert by_label["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q2"
    defaults = OperatorConfig(
        settings=Settings(), secret_key="k", train_gpus=0, train_node_selector={"cpu": "yes"}
    )
    cpu = training_job(resource(), defaults)
    container = cpu["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert {"name": "DEVICE", "value": "cpu"} in container["env"]
    assert cpu["spec"]["template"]["spec"]["nodeSelector"] == {"cpu": "yes"}


def test_invalid_spec_is_reported_with_the_field():
    with pytest.raises(InvalidSpec, match="spec.speakerName"):
        read_spec(resource(speakerName="Hero_1"))
    with pytest.raises(InvalidSpec, match="spec.numEpochs"):
        read_spec(resource(numEpochs=0))


@pytest.mark.parametrize(
    ("status", "state", "reason"),
    [
        ({}, "pending", ""),
        ({"active": 1}, "running", ""),
        ({"succeeded": 1}, "succeeded", "JobSucceeded"),
        ({"conditions": [{"type": "Complete", "status": "True"}]}, "succeeded", "JobSucceeded"),
        (
            {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]},
            "failed",
            "DeadlineExceeded",
        ),
        ({"failed": 2}, "failed", "BackoffLimitExceeded"),
        ({"conditions": [{"type": "Failed", "status": "False"}], "active": 1}, "running", ""),
    ],
)
def test_job_outcome(status, state, reason):
    outcome = job_outcome({"spec": {"backoffLimit": 1}, "status": status})
    assert (outcome.state, outcome.reason) == (state, reason)


def test_termination_message_reads_the_newest_failed_pod():
    def pod(name, created, message, exit_code=1):
        return {
            "metadata": {"name": name, "creationTimestamp": created},
            "status": {
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "state": {
                            "terminated": {"exitCode": exit_code, "reason": "Error", "message": message}
                        },
                    }
                ]
            },
        }

    pods = [
        pod("a", "2026-01-01T00:00:00Z", "old"),
        pod("b", "2026-01-01T00:05:00Z", "dataset has no train.jsonl"),
    ]
    assert termination_message(pods) == "pod b: trainer exited 1 (Error): dataset has no train.jsonl"
    assert termination_message([pod("c", "2026-01-01T00:00:00Z", "", exit_code=0)]) is None
    no_code = pod("d", "", "out of memory")
    del no_code["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
    assert termination_message([no_code]) == "pod d: trainer terminated (Error): out of memory"
    job = training_job(resource())
    assert resource_of(job) == "hero"


def test_inference_objects_and_drift():
    deployment = build_inference_deployment(CONFIG)
    service = build_inference_service(CONFIG)
    assert service["spec"]["clusterIP"] == "None"  # one DNS record per replica: voices can stick to one
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GPU_MAX_MODELS"] == "4" and env["GPU_IDLE_TIMEOUT"] == "300"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    actual = {**deployment, "status": {"replicas": 1}}
    actual["spec"] = {**deployment["spec"], "progressDeadlineSeconds": 600}  # server defaults are fine
    assert drift(deployment, actual) == []
    scaled = {**actual, "spec": {**actual["spec"], "replicas": 0}}
    assert drift(deployment, scaled) == ["spec.replicas"]


def test_phases_only_move_forward():
    assert may_advance(None, "Queued") and may_advance("Queued", "Training")
    assert not may_advance("Loading", "Training") and not may_advance("Training", "Queued")
    assert may_advance("Training", "Failed") and not may_advance("Ready", "Failed")
    assert not may_advance("Failed", "Ready") and not may_advance("Ready", "Ready")


def test_conditions_keep_their_transition_time_until_status_changes():
    first = merge_conditions([], phase_conditions("Queued", "JobCreated", "m"), generation=1, timestamp="T1")
    again = merge_conditions(
        first, phase_conditions("Training", "Training", "m"), generation=2, timestamp="T2"
    )
    ready = {c["type"]: c for c in again}["Ready"]
    assert (ready["status"], ready["lastTransitionTime"], ready["observedGeneration"]) == ("False", "T1", 2)
    done = {
        c["type"]: c
        for c in merge_conditions(
            again, phase_conditions("Ready", "VoiceLoaded", "m"), generation=2, timestamp="T3"
        )
    }
    assert done["Ready"]["status"] == "True" and done["Ready"]["lastTransitionTime"] == "T3"
    assert done["TrainingJobCreated"]["status"] == "True"


def test_progress_status_reads_trainer_events():
    progress = progress_status(
        {
            "stage": "training",
            "epoch": 2,
            "total_epochs": 5,
            "step": 7,
            "loss": 0.25,
            "global_step": 17,
            "extra": "dropped",
        },
        "T",
    )
    assert progress == {
        "stage": "training",
        "epoch": 2,
        "totalEpochs": 5,
        "step": 7,
        "loss": 0.25,
        "globalStep": 17,
        "updatedAt": "T",
    }
    assert "loss" not in progress_status({"stage": "training", "loss": float("nan")}, "T")


def test_progress_status_leaves_out_what_does_not_read_as_a_number():
    # JSON's 1e999 arrives as infinity: no count, like NaN, text and null (the facade reads events the same way).
    event = {"stage": "training", "epoch": 1e999, "total_epochs": "5", "step": float("nan"), "loss": "0.5"}
    assert progress_status({**event, "global_step": "x"}, "T") == {
        "stage": "training",
        "totalEpochs": 5,
        "loss": 0.5,
        "updatedAt": "T",
    }


def test_rendezvous_keeps_voices_on_their_replica():
    replicas = [f"http://10.0.0.{i}:8000" for i in range(1, 5)]
    voices = [f"voice-{i}" for i in range(400)]
    owners = {voice: pick(voice, replicas) for voice in voices}
    assert owners == {voice: pick(voice, list(reversed(replicas))) for voice in voices}  # order-independent
    spread = collections.Counter(owners.values())
    assert len(spread) == 4 and min(spread.values()) > 60
    survivors = replicas[:3]
    for voice in voices:  # a replica leaving moves only its own voices
        if owners[voice] in survivors:
            assert pick(voice, survivors) == owners[voice]
    assert rendezvous_order("voice-1", replicas)[0] == owners["voice-1"]


def test_a_lora_voice_is_placed_by_its_base_and_book_and_a_full_voice_by_its_id():
    seed = Settings().base_model
    cases = [
        (resource("narrator"), "narrator", None),
        (resource("narrator", bookId="b1"), "narrator", None),
        (resource("hero", method="lora"), f"lora:{seed}", seed),
        (resource("hero", method="lora", bookId="b1"), f"lora:{seed}#b1", seed),
        (
            resource("hero", method="lora", bookId="b1", baseModel="org/other"),
            "lora:org/other#b1",
            "org/other",
        ),
    ]
    for body, key, base in cases:
        where = placement(CONFIG, body["metadata"]["name"], body)
        assert (where.key, where.lora_base) == (key, base)
        expected = {"routingKey": key, "inferenceReplica": "http://r:8000"}
        assert where.status("http://r:8000") == (
            expected if base is None else {**expected, "baseModel": base}
        )


def test_the_charts_adapter_budget_reaches_the_inference_pods():
    docs = render("--set", "inference.gpuMaxAdapters=8")
    (data,) = [
        c["data"] for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == "vft-voicefinetune-operator"
    ]
    deployment = build_inference_deployment(OperatorConfig.from_env(data, secret_key="k"))
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["GPU_MAX_ADAPTERS"], env["GPU_MAX_MODELS"]) == ("8", "4")


def test_objects_the_operator_makes_validate_for_kubernetes_1_30(tmp_path):
    """The Job, Deployment and Service the operator creates pass kubernetes-validate in strict mode, as the chart
    does (the API server would default some fields a strict schema requires, e.g. onPodConditions[].status)."""
    validate = (
        shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent)) or "kubernetes-validate"
    )
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "op", "uid": "u-2"}
    scheduled = resource(
        "narrator",
        labels={"kueue.x-k8s.io/queue-name": "q"},
        gpus=2,
        nodeSelector={"gpu": "a100"},
        tolerations=[{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
    )
    objects = [
        training_job(resource()),
        training_job(scheduled),
        build_inference_deployment(CONFIG, owner),
        build_inference_service(CONFIG, owner),
    ]
    manifest = tmp_path / "made.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    result = subprocess.run(
        [validate, "-k", "1.30.0", "--strict", str(manifest)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_progress_url_default_depends_on_where_the_operator_runs(tmp_path):
    pod = OperatorConfig.from_env(
        {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "VFT_OPERATOR_SECRET_KEY": "k", "POD_NAMESPACE": "voices"}
    )
    assert pod.progress_url_base == "http://voicefinetune-operator.voices.svc:8081"
    laptop = OperatorConfig.from_env({"VFT_DATA_DIR": str(tmp_path)})
    assert laptop.progress_url_base == "http://127.0.0.1:8081"
    explicit = OperatorConfig.from_env(
        {"VFT_PROGRESS_BASE_URL": "http://op:9000/", "VFT_OPERATOR_SECRET_KEY": "k"}
    )
    assert explicit.progress_url_base == "http://op:9000"
    # no configured key and no Secret named: one is made once and kept, so a restarted operator accepts the tokens
    # it gave out
    key = asyncio.run(progress_key(laptop, kube=None))
    assert (
        key
        and asyncio.run(progress_key(OperatorConfig.from_env({"VFT_DATA_DIR": str(tmp_path)}), None)) == key
    )
    assert asyncio.run(progress_key(explicit, None)) == "k"


def test_the_progress_token_secret_is_owned_by_its_resource_and_named_after_its_token():
    import base64

    from voicefinetune_operator.progress_secret import progress_secret

    body = resource()
    secret = progress_secret(body, "tok-1")
    meta = secret["metadata"]
    assert meta["namespace"] == body["metadata"]["namespace"]
    assert meta["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    assert base64.b64decode(secret["data"]["token"]) == b"tok-1"
    assert meta["name"].startswith("vft-train-hero-progress-")
    assert progress_secret(body, "tok-2")["metadata"]["name"] != meta["name"]  # a new key, a new Secret
