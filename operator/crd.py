"""The VoiceFinetune resource as code: its coordinates, phases, labels, and its spec read into a validated request.

The schema itself lives in the CRD YAML (charts/voicefinetune/crds/); the spec defaults are the seed's
(``FinetuneRequest``), and a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..schemas import FinetuneRequest

GROUP = "voicefinetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VoiceFinetune"
PLURAL = "voicefinetunes"

FINALIZER = f"{GROUP}/cleanup"
MANAGED_BY = "voicefinetune-operator"
NAME_LABEL = f"{GROUP}/name"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

QUEUED, PREPARING, TRAINING, LOADING, READY, FAILED = "Queued", "Preparing", "Training", "Loading", "Ready", "Failed"
PHASES = (QUEUED, PREPARING, TRAINING, LOADING, READY, FAILED)
TERMINAL_PHASES = (READY, FAILED)

# camelCase spec field -> FinetuneRequest field (the /finetune body)
SPEC_FIELDS = {
    "datasetS3Key": "dataset_s3_key",
    "speakerName": "speaker_name",
    "numEpochs": "num_epochs",
    "batchSize": "batch_size",
    "lr": "lr",
    "bookId": "book_id",
    "chapterId": "chapter_id",
    "characterId": "character_id",
    "resumeJobId": "resume_job_id",
}
DELETION_POLICIES = ("Retain", "Delete")


class InvalidSpec(ValueError):
    """The spec breaks the schema (a cluster without CRD validation let it in); the message says what to fix."""


@dataclass(frozen=True)
class Scheduling:
    """Where and how the training pod runs; ``None`` means the operator's default."""

    gpus: int | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    trainer_image: str | None = None
    base_model: str | None = None
    queue_name: str | None = None


@dataclass(frozen=True)
class VoiceFinetuneSpec:
    request: FinetuneRequest
    scheduling: Scheduling = field(default_factory=Scheduling)
    deletion_policy: str = "Retain"


def read_spec(body: dict[str, Any]) -> VoiceFinetuneSpec:
    """The resource's spec with the seed's defaults applied, validated like a /finetune body."""
    spec = body.get("spec") or {}
    values = {snake: spec[camel] for camel, snake in SPEC_FIELDS.items() if spec.get(camel) is not None}
    try:
        request = FinetuneRequest(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"spec.{_camel(str(error['loc'][0])) if error['loc'] else ''}: "
            f"{str(error['msg']).removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise InvalidSpec(problems) from exc
    policy = spec.get("deletionPolicy") or "Retain"
    if policy not in DELETION_POLICIES:
        raise InvalidSpec(f"spec.deletionPolicy must be one of {', '.join(DELETION_POLICIES)}; got {policy!r}")
    labels = (body.get("metadata") or {}).get("labels") or {}
    scheduling = Scheduling(
        gpus=spec.get("gpus"),
        node_selector=spec.get("nodeSelector"),
        tolerations=spec.get("tolerations"),
        trainer_image=spec.get("trainerImage"),
        base_model=spec.get("baseModel"),
        queue_name=spec.get("queueName") or labels.get(KUEUE_QUEUE_LABEL),
    )
    return VoiceFinetuneSpec(request=request, scheduling=scheduling, deletion_policy=policy)


def request_to_spec(request: FinetuneRequest) -> dict[str, Any]:
    """The camelCase spec for a /finetune body (only the fields that are set)."""
    values = request.model_dump()
    return {camel: values[snake] for camel, snake in SPEC_FIELDS.items() if values.get(snake) is not None}


def _camel(snake: str) -> str:
    for camel, name in SPEC_FIELDS.items():
        if name == snake:
            return camel
    return snake


def object_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    """The API path of VoiceFinetunes in a namespace, or of one of them (and its subresource)."""
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    if name:
        path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
    return path


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    """An ownerReference to the resource: its Job goes away with it (garbage collection)."""
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
