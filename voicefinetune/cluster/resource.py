"""The VoiceFinetune custom resource as both sides see it: its coordinates and API paths, and the mapping between
a ``/finetune`` body and the resource's camelCase ``spec`` (see ``lifecycle.SPEC_FIELDS``).

The schema itself lives in the CRD YAML (charts/voicefinetune/crds/); tests keep its defaults equal to the REST
schema's.
"""

from __future__ import annotations

from typing import Any

from ..lifecycle import FLASH_ATTENTION_STATUS, SPEC_FIELDS
from ..schemas import FinetuneRequest

GROUP = "voicefinetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VoiceFinetune"
PLURAL = "voicefinetunes"


def object_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    """The API path of VoiceFinetunes in a namespace, or of one of them (and its subresource)."""
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    if name:
        path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
    return path


def request_to_spec(request: FinetuneRequest) -> dict[str, Any]:
    """The camelCase spec for a /finetune body (only the fields that are set)."""
    values = request.model_dump()
    return {camel: values[snake] for camel, snake in SPEC_FIELDS.items() if values.get(snake) is not None}


def spec_values(spec: dict[str, Any]) -> dict[str, Any]:
    """The /finetune fields a spec sets (snake_case), for building a ``FinetuneRequest``."""
    return {snake: spec[camel] for camel, snake in SPEC_FIELDS.items() if spec.get(camel) is not None}


def trains_with_flash_attention(
    resource: dict[str, Any], *, use_flash_attn: bool, device: str, tiny: bool
) -> bool:
    """Whether the resource's training pod uses flash attention: what its trainer reported
    (``status.flashAttention``) once known, else the prediction: USE_FLASH_ATTN on, a GPU device, a pod with a
    GPU (``spec.gpus`` 0 trains on the CPU) and real models (the trainer image carries flash-attn)."""
    reported = (resource.get("status") or {}).get(FLASH_ATTENTION_STATUS)
    if isinstance(reported, bool):
        return reported
    gpus = (resource.get("spec") or {}).get("gpus")
    return use_flash_attn and not device.startswith("cpu") and gpus != 0 and not tiny
