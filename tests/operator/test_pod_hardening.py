"""Trainer and inference pods run with a read-only root filesystem; their writable places are emptyDirs."""

from __future__ import annotations

from voicefinetune_operator.config import OperatorConfig
from voicefinetune_operator.crd import read_spec
from voicefinetune_operator.inference import build_inference_deployment
from voicefinetune_operator.jobs import build_training_job

from voicefinetune.settings import Settings

CONFIG = OperatorConfig(settings=Settings(), namespace="voices", secret_key="k")
BODY = {
    "apiVersion": "voicefinetune.io/v1alpha1",
    "kind": "VoiceFinetune",
    "metadata": {"name": "hero", "namespace": "voices", "uid": "u-1"},
    "spec": {"datasetS3Key": "datasets/Hero1/dataset.zip", "speakerName": "hero_voice"},
}


def pods() -> list[dict]:
    job = build_training_job(
        BODY,
        read_spec(BODY),
        config=CONFIG,
        progress_url="http://op/progress",
        progress_secret="progress-secret",
    )
    return [job["spec"]["template"]["spec"], build_inference_deployment(CONFIG)["spec"]["template"]["spec"]]


def test_root_filesystems_are_read_only_and_every_mount_is_an_empty_dir_or_the_cache():
    for pod in pods():
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts["/tmp"] == "tmp" and "emptyDir" in volumes["tmp"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"
        for name in mounts.values():
            assert "emptyDir" in volumes[name] or "persistentVolumeClaim" in volumes[name], name


def test_the_inference_deployment_reads_the_api_key_from_its_secret():
    from dataclasses import replace

    def env(config: OperatorConfig) -> dict[str, dict]:
        container = build_inference_deployment(config)["spec"]["template"]["spec"]["containers"][0]
        return {item["name"]: item for item in container["env"]}

    assert "VFT_API_KEY" not in env(CONFIG)
    keyed = env(replace(CONFIG, api_key_secret="vft-api-key"))
    assert keyed["VFT_API_KEY"] == {
        "name": "VFT_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "vft-api-key", "key": "VFT_API_KEY"}},
    }
