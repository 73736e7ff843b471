"""Where a trained voice is preloaded, and how its status says so.

A full voice is preloaded on the replica its own id hashes to. A LoRA voice is preloaded (its adapter attached,
its base model loaded if needed) on the replica its base checkpoint and book hash to, so a book's cast shares one
resident base model; the facade sends its requests there because it routes by the key recorded here
(``voicefinetune.cluster.routing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voicefinetune.cluster.routing import ROUTING_KEY_FIELD, voice_key
from voicefinetune_operator.config import OperatorConfig
from voicefinetune_operator.crd import InvalidSpec, read_spec

LORA = "lora"


@dataclass(frozen=True)
class Placement:
    key: str  # the rendezvous key the voice is preloaded and routed by
    lora_base: str | None = None  # a LoRA voice's base checkpoint

    def status(self, replica: str) -> dict[str, Any]:
        """The status fields that say where the voice was preloaded and by which key."""
        fields = {ROUTING_KEY_FIELD: self.key, "inferenceReplica": replica}
        if self.lora_base is not None:
            fields["baseModel"] = self.lora_base
        return fields

    def loaded_message(self, replica: str) -> str:
        if self.lora_base is None:
            return f"voice registered and preloaded on {replica}"
        return (
            f"LoRA voice registered and its adapter attached on {replica}, beside base model {self.lora_base}"
        )


def placement(config: OperatorConfig, voice: str, body: dict[str, Any]) -> Placement:
    """The placement of the resource ``body``'s voice (``voice``: its id on the replicas). A LoRA voice's base is
    the one its trainer was given: ``spec.baseModel``, else the operator's ``VFT_BASE_MODEL``."""
    try:
        spec = read_spec(body)
    except InvalidSpec:  # it trained, so it was valid then; an unreadable spec now keeps the voice's own key
        return Placement(voice)
    if spec.request.method != LORA:
        return Placement(voice)
    base = spec.scheduling.base_model or config.settings.base_model
    return Placement(voice_key(voice, lora_base=base, book_id=spec.request.book_id), lora_base=base)
