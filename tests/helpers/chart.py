"""The Helm chart as the real helm renders it, and helpers to read the rendered objects."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.k8s_harness import REPO

CHART = REPO / "charts" / "voicefinetune"
BIN = Path(sys.executable).parent
HELM = shutil.which("helm", path=str(BIN)) or "helm"
VALIDATE = shutil.which("kubernetes-validate", path=str(BIN)) or "kubernetes-validate"


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60)


# The least a render needs (the chart refuses to run without S3 keys, an existing Secret or s3.keyless).
S3_KEYS = ("--set", "s3.accessKey=test-access-key,s3.secretKey=test-secret-key")


def render(*extra: str, crds: bool = False, namespace: str = "voices") -> list[dict[str, Any]]:
    """The objects ``helm template`` renders with the test S3 keys and ``extra`` (which may override them)."""
    args = ["template", "vft", str(CHART), "--namespace", namespace, *S3_KEYS, *extra]
    result = helm(*args, *(["--include-crds"] if crds else []))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def env_entries(docs: list[dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    """The env entry ``name`` of each Deployment's first container that has one, by Deployment name."""
    found = {}
    for doc in of_kind(docs, "Deployment"):
        for item in doc["spec"]["template"]["spec"]["containers"][0].get("env", []):
            if item["name"] == name:
                found[doc["metadata"]["name"]] = item
    return found


def rules_of(docs: list[dict[str, Any]], name: str) -> set[tuple[str, str, str, str]]:
    """(apiGroup, resource, verb, resourceName or '') of every rule of the Roles/ClusterRoles called ``name``."""
    granted = set()
    for role in docs:
        if role["kind"] in ("Role", "ClusterRole") and role["metadata"]["name"] == name:
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            for resource_name in rule.get("resourceNames") or [""]:
                                granted.add((group, resource, verb, resource_name))
    return granted


def operator_config(docs: list[dict[str, Any]]) -> Any:
    """The operator's configuration as the rendered chart gives it (its ConfigMap, in the release namespace)."""
    from voicefinetune_operator.config import OperatorConfig

    (config_map,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-operator")]
    return OperatorConfig.from_env({**config_map["data"]}, secret_key="k")


def operator_built(docs: list[dict[str, Any]], namespace: str = "voices") -> list[dict[str, Any]]:
    """The objects the operator makes with the rendered chart's settings: a training Job for a VoiceFinetune in
    ``namespace``, the inference Deployment and its Service."""
    from voicefinetune_operator.crd import read_spec
    from voicefinetune_operator.inference import build_inference_deployment, build_inference_service
    from voicefinetune_operator.jobs import build_training_job

    config = operator_config(docs)
    body = {
        "apiVersion": "voicefinetune.io/v1alpha1",
        "kind": "VoiceFinetune",
        "metadata": {"name": "hero", "namespace": namespace, "uid": "u-1"},
        "spec": {"datasetS3Key": "datasets/Hero1/dataset.zip", "speakerName": "hero_voice"},
    }
    job = build_training_job(
        body,
        read_spec(body),
        config=config,
        progress_url=f"{config.progress_url_base}/progress/{namespace}/hero",
        progress_secret="vft-progress-hero",
    )
    return [job, build_inference_deployment(config), build_inference_service(config)]
