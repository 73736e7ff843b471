"""The operator's side of the VoiceFinetune resource: its finalizer and labels, and its spec read into a validated
request plus scheduling. The coordinates and the spec mapping shared with the facade are in
``voicefinetune.cluster.resource``; phases and spec fields in ``voicefinetune.lifecycle``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from voicefinetune.cluster.resource import API_VERSION, GROUP, KIND, spec_values
from voicefinetune.lifecycle import camel_case
from voicefinetune.schemas import FinetuneRequest

FINALIZER = f"{GROUP}/cleanup"
# Set by `vft operator --release-finalizers`: no handler needs the finalizer any more, so none puts it back.
RELEASED_ANNOTATION = f"{GROUP}/released"
MANAGED_BY = "voicefinetune-operator"
NAME_LABEL = f"{GROUP}/name"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

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
    """The resource's spec with the original service's defaults applied, validated like a /finetune body."""
    spec = body.get("spec") or {}
    try:
        request = FinetuneRequest(**spec_values(spec))
    except ValidationError as exc:
        problems = "; ".join(
            f"spec.{camel_case(str(error['loc'][0])) if error['loc'] else ''}: "
            f"{str(error['msg']).removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise InvalidSpec(problems) from exc
    policy = spec.get("deletionPolicy") or "Retain"
    if policy not in DELETION_POLICIES:
        raise InvalidSpec(
            f"spec.deletionPolicy must be one of {', '.join(DELETION_POLICIES)}; got {policy!r}"
        )
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
