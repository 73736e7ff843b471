"""The training Job of a VoiceFinetune, as plain functions: its name, its manifest, and how it ended."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from voicefinetune.cluster.identity import voice_id
from voicefinetune.storage import checkpoint_prefix
from voicefinetune.train_request import TrainRequest, method_fields
from voicefinetune_operator.config import GPU_RESOURCE, OperatorConfig
from voicefinetune_operator.crd import (
    KUEUE_QUEUE_LABEL,
    MANAGED_BY,
    NAME_LABEL,
    VoiceFinetuneSpec,
    owner_reference,
)

JOB_PREFIX = "vft-train-"
MAX_JOB_NAME = 63  # the Job's name becomes a pod label value
TRAINER_CONTAINER = "trainer"
DATA_DIR = "/data"
EXIT_USAGE = 2  # `vft train` refused its arguments: retrying cannot help

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
PROGRESS_TOKEN_KEY = "token"  # the key of the progress-token Secret (see progress_secret.py)


def job_name(resource_name: str) -> str:
    """``vft-train-{name}``, shortened with a hash suffix when too long: the same name always, so a restarted
    operator or a re-delivered event finds the Job it made instead of making a second one."""
    name = f"{JOB_PREFIX}{resource_name}"
    if len(name) <= MAX_JOB_NAME:
        return name
    digest = hashlib.sha256(resource_name.encode()).hexdigest()[:10]
    head = name[: MAX_JOB_NAME - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}"


def label_value(value: str) -> str:
    """A label value (63 characters at most) naming ``value``: itself, or a hashed shortening."""
    if len(value) <= 63:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:10]
    return f"{value[: 63 - len(digest) - 1].rstrip('-.')}-{digest}"


def resource_voice(config: OperatorConfig, namespace: str, resource_name: str) -> str:
    """The resource's id outside Kubernetes: its checkpoint prefix and voice id (``cluster.identity``)."""
    return voice_id(namespace, resource_name, home=config.namespace, qualify=config.namespaced_ids)


def trainer_labels(resource_name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "voicefinetune",
        "app.kubernetes.io/component": "trainer",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        NAME_LABEL: label_value(resource_name),
    }


def trainer_args(job_id: str, spec: VoiceFinetuneSpec, progress_url: str) -> list[str]:
    """``job_id``: the resource's identity (``cluster.identity``), which names its checkpoint prefix."""
    request = spec.request
    return TrainRequest(
        job_id=job_id,
        dataset=request.dataset_s3_key,
        speaker_name=request.speaker_name,
        num_epochs=request.num_epochs,
        batch_size=request.batch_size,
        lr=request.lr,
        gradient_accumulation_steps=request.gradient_accumulation_steps,
        language=request.language,
        **method_fields(request),
        resume_from=checkpoint_prefix(request.resume_job_id) if request.resume_job_id else None,
        base_model=spec.scheduling.base_model,
    ).arguments(progress_url=progress_url)


def build_training_job(
    body: dict[str, Any],
    spec: VoiceFinetuneSpec,
    *,
    config: OperatorConfig,
    progress_url: str,
    progress_secret: str,
    s3_secret: str | None = None,
) -> dict[str, Any]:
    """The batch/v1 Job that runs ``vft train`` for the resource ``body`` in the trainer image; ``s3_secret``: the
    Secret its pod reads the S3 keys from (default: the configured one; see ``s3_secret.py``)."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    scheduling = spec.scheduling
    gpus = config.train_gpus if scheduling.gpus is None else scheduling.gpus
    labels = trainer_labels(name)
    job_labels = dict(labels)
    if scheduling.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = scheduling.queue_name

    env: list[dict[str, Any]] = [
        {"name": "VFT_PROGRESS_URL", "value": progress_url},
        # The token only lets its holder report progress for this one resource (see progress_secret.py).
        {
            "name": "VFT_PROGRESS_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": progress_secret, "key": PROGRESS_TOKEN_KEY}},
        },
        {"name": "VFT_DATA_DIR", "value": DATA_DIR},
        {"name": "HF_HOME", "value": f"{DATA_DIR}/huggingface"},
        {"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"},
        *TMP_ENV,
        *config.pod_settings_env(),
        *config.s3_secret_env(s3_secret),
    ]
    if gpus == 0:
        env = [item for item in env if item["name"] != "DEVICE"] + [{"name": "DEVICE", "value": "cpu"}]

    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": config.train_cpu, "memory": config.train_memory},
        "limits": {"memory": config.train_memory},
    }
    if config.train_cpu_limit:
        resources["limits"]["cpu"] = config.train_cpu_limit
    if gpus:
        resources["requests"][GPU_RESOURCE] = str(gpus)
        resources["limits"][GPU_RESOURCE] = str(gpus)

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(config),
        "nodeSelector": dict(
            scheduling.node_selector if scheduling.node_selector is not None else config.train_node_selector
        ),
        "tolerations": list(
            scheduling.tolerations if scheduling.tolerations is not None else config.train_tolerations
        ),
        "containers": [
            {
                "name": TRAINER_CONTAINER,
                "image": scheduling.trainer_image or config.trainer_image,
                "imagePullPolicy": config.image_pull_policy,
                "command": ["vft", "train"],
                "args": trainer_args(resource_voice(config, namespace, name), spec, progress_url),
                "env": env,
                "resources": resources,
                "volumeMounts": [
                    {"name": "dshm", "mountPath": "/dev/shm"},
                    {"name": "scratch", "mountPath": DATA_DIR},
                    TMP_MOUNT,
                ],
                "securityContext": CONTAINER_SECURITY_CONTEXT,
                # The trainer's last stdout line (the `failed` event) becomes the pod's termination message.
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": config.train_shm_size}},
            {"name": "scratch", "emptyDir": {"sizeLimit": config.train_scratch_size}},
            TMP_VOLUME,
        ],
    }
    if config.train_service_account:
        pod_spec["serviceAccountName"] = config.train_service_account
    if config.train_priority_class:
        pod_spec["priorityClassName"] = config.train_priority_class
    if config.image_pull_secrets:
        pod_spec["imagePullSecrets"] = config.pull_secrets()

    job_spec: dict[str, Any] = {
        "backoffLimit": config.train_backoff_limit,
        "activeDeadlineSeconds": config.train_deadline_seconds,
        "ttlSecondsAfterFinished": config.train_ttl_seconds,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": TRAINER_CONTAINER,
                        "operator": "In",
                        "values": [EXIT_USAGE],
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if scheduling.queue_name:
        job_spec["suspend"] = True  # Kueue unsuspends it on admission

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name),
            "namespace": namespace,
            "labels": job_labels,
            "annotations": {NAME_LABEL: name},  # the full name (the label may be shortened)
            "ownerReferences": [owner_reference(body)],
        },
        "spec": job_spec,
    }


def pod_security_context(config: OperatorConfig) -> dict[str, Any]:
    """Non-root with the configured IDs; those left unset are the platform's to assign."""
    ids = {"runAsUser": config.run_as_user, "runAsGroup": config.run_as_group, "fsGroup": config.fs_group}
    return {
        "runAsNonRoot": True,
        **{key: value for key, value in ids.items() if value is not None},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


CONTAINER_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    # Writable places are emptyDirs: the data folder, /dev/shm and TMP_VOLUME at /tmp (caches go there via HOME).
    "readOnlyRootFilesystem": True,
}
TMP_DIR = "/tmp"
TMP_VOLUME = {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}
TMP_MOUNT = {"name": "tmp", "mountPath": TMP_DIR}
TMP_ENV = [{"name": "HOME", "value": TMP_DIR}, {"name": "TMPDIR", "value": TMP_DIR}]


def owned_by(job: dict[str, Any], body: dict[str, Any]) -> bool:
    """Whether the Job belongs to this resource (an adopted Job of the same name may be a stranger's)."""
    uid = body["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in job.get("metadata", {}).get("ownerReferences") or [])


def resource_of(job: dict[str, Any]) -> str | None:
    """The VoiceFinetune name a training Job belongs to."""
    meta = job.get("metadata", {})
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "VoiceFinetune":
            return ref.get("name")
    return (meta.get("annotations") or {}).get(NAME_LABEL)


# --- outcome ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobOutcome:
    state: str  # pending | running | succeeded | failed
    reason: str = ""
    message: str = ""


def job_outcome(job: dict[str, Any]) -> JobOutcome:
    """How the Job stands, from its conditions (and counters, for clients that write only those)."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    for kind in ("Failed", "FailureTarget"):
        if kind in conditions:
            condition = conditions[kind]
            return JobOutcome(
                "failed", condition.get("reason") or "JobFailed", condition.get("message") or ""
            )
    for kind in ("Complete", "SuccessCriteriaMet"):
        if kind in conditions:
            return JobOutcome("succeeded", "JobSucceeded", conditions[kind].get("message") or "")
    if int(status.get("succeeded") or 0) >= 1:
        return JobOutcome("succeeded", "JobSucceeded")
    backoff_limit = int((job.get("spec") or {}).get("backoffLimit", 6))
    if int(status.get("failed") or 0) > backoff_limit:
        return JobOutcome("failed", "BackoffLimitExceeded", "the Job has reached its backoff limit")
    if int(status.get("active") or 0) >= 1 or int(status.get("ready") or 0) >= 1:
        return JobOutcome("running")
    return JobOutcome("pending")


def job_duration(job: dict[str, Any]) -> float | None:
    """Seconds from the Job's start to its completion (or its last transition), when both are known."""
    from datetime import datetime

    status = job.get("status") or {}
    start = status.get("startTime") or job.get("metadata", {}).get("creationTimestamp")
    end = status.get("completionTime") or max(
        (c.get("lastTransitionTime") for c in status.get("conditions") or [] if c.get("lastTransitionTime")),
        default=None,
    )
    if not start or not end:
        return None
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return max(0.0, (parse(end) - parse(start)).total_seconds())


def belongs_to_job(pod: dict[str, Any], job_name_: str) -> bool:
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    if any(labels.get(key) == job_name_ for key in JOB_NAME_LABELS):
        return True
    if any(
        ref.get("kind") == "Job" and ref.get("name") == job_name_ for ref in meta.get("ownerReferences") or []
    ):
        return True
    return not labels and str(meta.get("name", "")).startswith(f"{job_name_}-")  # the Job controller's naming


def termination_message(pods: list[dict[str, Any]]) -> str | None:
    """What the newest terminated trainer container said (its termination message), with its exit details."""
    for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "", reverse=True):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            for state_key in ("state", "lastState"):
                terminated = (container.get(state_key) or {}).get("terminated")
                detail = (terminated or {}).get("message") or ""
                exit_code = (terminated or {}).get("exitCode")
                if not terminated or (exit_code == 0 and not detail.strip()):
                    continue
                reason = terminated.get("reason") or "Error"
                how = f"exited {exit_code} ({reason})" if exit_code is not None else f"terminated ({reason})"
                head = f"pod {pod['metadata'].get('name')}: {container.get('name')} {how}"
                return f"{head}: {detail.strip()}" if detail.strip() else head
    return None
