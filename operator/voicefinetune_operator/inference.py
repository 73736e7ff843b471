"""The inference Deployment and its headless Service, as the operator wants them, and how to tell drift."""

from __future__ import annotations

import math
from typing import Any

from voicefinetune_operator.config import GPU_RESOURCE, INFERENCE_PORT, OperatorConfig
from voicefinetune_operator.crd import MANAGED_BY
from voicefinetune_operator.jobs import (
    CONTAINER_SECURITY_CONTEXT,
    TMP_ENV,
    TMP_MOUNT,
    TMP_VOLUME,
    pod_security_context,
)

CACHE_DIR = "/data"
SELECTOR = {"app.kubernetes.io/name": "voicefinetune", "app.kubernetes.io/component": "inference"}
LABELS = {**SELECTOR, "app.kubernetes.io/managed-by": MANAGED_BY}
INSTANCE_LABEL = "app.kubernetes.io/instance"


def selector(config: OperatorConfig) -> dict[str, str]:
    """The inference pods' selector; with the release's instance label, two releases in a namespace stay apart."""
    return {**SELECTOR, INSTANCE_LABEL: config.instance} if config.instance else dict(SELECTOR)


def labels(config: OperatorConfig) -> dict[str, str]:
    return {**LABELS, **selector(config)}


def cache_volume(config: OperatorConfig) -> dict[str, Any]:
    """The disk cache of voices: a PersistentVolumeClaim when configured, else node-local scratch with room for
    the LRU's budget plus the models being downloaded."""
    if config.inference_cache_pvc:
        return {"name": "cache", "persistentVolumeClaim": {"claimName": config.inference_cache_pvc}}
    size = math.ceil(config.settings.disk_cache_gb * 1.25) + 10
    return {"name": "cache", "emptyDir": {"sizeLimit": f"{size}Gi"}}


def build_inference_deployment(config: OperatorConfig, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    settings = config.settings
    env = [
        *config.pod_settings_env(),
        {"name": "GPU_MAX_MODELS", "value": str(settings.gpu_max_models)},
        {"name": "GPU_MAX_ADAPTERS", "value": str(settings.gpu_max_adapters)},
        {"name": "GPU_IDLE_TIMEOUT", "value": str(settings.gpu_idle_timeout)},
        {"name": "GPU_MAX_CONCURRENCY", "value": str(settings.gpu_max_concurrency)},
        {"name": "VFT_DISK_CACHE_GB", "value": str(settings.disk_cache_gb)},
        {"name": "VFT_DATA_DIR", "value": CACHE_DIR},
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
        {"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"},
        *config.s3_secret_env(),
        *config.api_key_env(),
        *config.webhook_secret_env(),
        *TMP_ENV,
    ]
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": config.inference_cpu, "memory": config.inference_memory},
        "limits": {"memory": config.inference_memory},
    }
    if config.inference_cpu_limit:
        resources["limits"]["cpu"] = config.inference_cpu_limit
    if config.inference_gpus:
        resources["requests"][GPU_RESOURCE] = str(config.inference_gpus)
        resources["limits"][GPU_RESOURCE] = str(config.inference_gpus)
    else:
        env = [item for item in env if item["name"] != "DEVICE"] + [{"name": "DEVICE", "value": "cpu"}]
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(config),
        "nodeSelector": dict(config.inference_node_selector),
        "tolerations": list(config.inference_tolerations),
        "containers": [
            {
                "name": "inference",
                "image": config.inference_image,
                "imagePullPolicy": config.image_pull_policy,
                "command": ["vft", "inference"],
                "args": ["--host", "0.0.0.0", "--port", str(INFERENCE_PORT)],
                "ports": [{"name": "http", "containerPort": INFERENCE_PORT, "protocol": "TCP"}],
                "env": env,
                "resources": resources,
                "readinessProbe": {**probe, "failureThreshold": 3},
                "livenessProbe": {**probe, "failureThreshold": 6, "initialDelaySeconds": 30},
                "volumeMounts": [
                    {"name": "cache", "mountPath": CACHE_DIR},
                    {"name": "dshm", "mountPath": "/dev/shm"},
                    TMP_MOUNT,
                ],
                "securityContext": CONTAINER_SECURITY_CONTEXT,
            }
        ],
        "volumes": [
            cache_volume(config),
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
            TMP_VOLUME,
        ],
    }
    if config.inference_service_account:
        pod_spec["serviceAccountName"] = config.inference_service_account
    if config.inference_priority_class:
        pod_spec["priorityClassName"] = config.inference_priority_class
    if config.image_pull_secrets:
        pod_spec["imagePullSecrets"] = config.pull_secrets()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(config, owner),
        "spec": {
            "replicas": config.inference_replicas,
            "selector": {"matchLabels": selector(config)},
            # Never ask for an extra GPU during a rollout: replace pods one at a time (with two or more replicas
            # one keeps serving; with one, a rollout is a short outage).
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": labels(config)}, "spec": pod_spec},
        },
    }


def build_inference_service(config: OperatorConfig, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """Headless: its DNS name resolves to every ready replica, so callers can keep a voice on one replica."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(config, owner),
        "spec": {
            "clusterIP": "None",
            "selector": selector(config),
            "ports": [{"name": "http", "port": INFERENCE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _metadata(config: OperatorConfig, owner: dict[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": config.inference_name,
        "namespace": config.namespace,
        "labels": labels(config),
    }
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


MANAGED_FIELDS = ("metadata.labels", "spec")


def repair_patch(desired: dict[str, Any], *, autoscaled: bool) -> dict[str, Any]:
    """The merge patch that puts a drifted object back; an autoscaled Deployment keeps its ``replicas`` (the
    HPA owns them)."""
    spec = dict(desired["spec"])
    if autoscaled:
        spec.pop("replicas", None)
    return {"metadata": {"labels": desired["metadata"]["labels"]}, "spec": spec}


def ignoring_replicas(desired: dict[str, Any]) -> dict[str, Any]:
    """``desired`` without ``spec.replicas``: what drift is measured against when an autoscaler owns them."""
    return {**desired, "spec": {key: value for key, value in desired["spec"].items() if key != "replicas"}}


def drift(desired: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Paths where ``actual`` no longer holds what ``desired`` says (extra fields added by the API server's
    defaulting are fine); empty when in sync."""
    differences: list[str] = []
    for dotted in MANAGED_FIELDS:
        want, have = _dig(desired, dotted), _dig(actual, dotted)
        differences += _compare(want, have, dotted)
    return differences


def _dig(obj: dict[str, Any], dotted: str) -> Any:
    node: Any = obj
    for part in dotted.split("."):
        node = (node or {}).get(part) if isinstance(node, dict) else None
    return node


def _compare(want: Any, have: Any, path: str) -> list[str]:
    if want in ({}, []) and have in (None, {}, []):
        return []  # the API server drops empty maps and lists
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return [path]
        return [
            diff for key, value in want.items() for diff in _compare(value, have.get(key), f"{path}.{key}")
        ]
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return [path]
        return [
            diff
            for i, (w, h) in enumerate(zip(want, have, strict=True))
            for diff in _compare(w, h, f"{path}[{i}]")
        ]
    if want is None:
        return []
    return [] if str(want) == str(have) else [path]
