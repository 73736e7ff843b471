"""Writes a VoiceFinetune's status: phase transitions (with conditions and an Event) and training progress.

Three sources write it concurrently (Job events, the progress receiver, voice loading), so every write reads the
fresh object and applies the phase rules under a per-resource lock: a late progress report can never move a
resource back from Loading to Training. The write carries the resourceVersion it was decided on (a precondition
the API server checks), so a second operator process, or any other writer in between, makes it read and decide
again instead of overwriting a newer phase.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from voicefinetune.cluster.client import Conflict, KubeClient
from voicefinetune.cluster.resource import object_path
from voicefinetune.lifecycle import (
    FLASH_ATTENTION_STATUS,
    STAGE_DONE,
    TERMINAL_PHASES,
    event_flash_attention,
    status_of,
)
from voicefinetune.webhooks import WebhookSender
from voicefinetune_operator.events import NORMAL, WARNING, EventRecorder
from voicefinetune_operator.status import (
    FAILED,
    LOADING,
    POD_READY,
    STAGE_PHASE,
    may_advance,
    merge_conditions,
    now,
    phase_conditions,
    progress_status,
)

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 5


def acted_on(body: dict[str, Any]) -> int | None:
    """The generation the operator trains with: the first it observed. A spec edited afterwards (the CRD refuses
    that; a cluster without CEL validation lets it in) is not applied, so ``observedGeneration`` does not claim it."""
    return (body.get("status") or {}).get("observedGeneration") or body["metadata"].get("generation")


class StatusWriter:
    def __init__(self, kube: KubeClient, events: EventRecorder, webhooks: WebhookSender | None = None):
        self.kube = kube
        self.events = events
        self.webhooks = webhooks  # a resource's spec.webhookUrl hears when it becomes Ready or Failed
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)

    async def _write(self, namespace: str, name: str, body: dict[str, Any], status: dict[str, Any]) -> bool:
        """Merge ``status`` into the resource unless it changed since ``body`` was read (then False)."""
        patch = {"metadata": {"resourceVersion": body["metadata"].get("resourceVersion")}, "status": status}
        if patch["metadata"]["resourceVersion"] is None:
            del patch["metadata"]
        try:
            await self.kube.patch(object_path(namespace, name, "status"), patch)
        except Conflict:
            return False
        return True

    async def _fresh(self, namespace: str, name: str) -> dict[str, Any] | None:
        body = await self.kube.get(object_path(namespace, name))
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return None
        return body

    async def transition(
        self,
        namespace: str,
        name: str,
        *,
        phase: str,
        reason: str,
        message: str = "",
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Enter ``phase`` if the rules allow it; returns the resource as it was before, or None when nothing
        changed. ``extra`` status fields are written either way (e.g. the Job's name on adoption)."""
        async with self._locks[(namespace, name)]:
            for _ in range(CONFLICT_RETRIES):
                body = await self._fresh(namespace, name)
                if body is None:
                    return None
                status = body.get("status") or {}
                if not may_advance(status.get("phase"), phase):
                    if (
                        extra
                        and any(status.get(key) != value for key, value in extra.items())
                        and not await self._write(namespace, name, body, extra)
                    ):
                        continue
                    return None
                text = message or f"{phase}: {reason}"
                if await self._write(
                    namespace, name, body, self._entering(body, phase, reason, message, extra)
                ):
                    break
            else:
                raise Conflict(
                    409, "Conflict", f"{namespace}/{name} kept changing while its status was written"
                )
        await self.events.post(body, kind=WARNING if phase == FAILED else NORMAL, reason=reason, message=text)
        log.info("%s/%s: %s -> %s (%s)", namespace, name, status.get("phase"), phase, reason)
        if self.webhooks is not None and phase in TERMINAL_PHASES:
            spec = body.get("spec") or {}
            self.webhooks.job_finished(
                spec.get("webhookUrl"),
                name,
                status_of(phase),
                speaker_name=spec.get("speakerName"),
                error=(message or reason) if phase == FAILED else None,
            )
        return body

    @staticmethod
    def _entering(
        body: dict[str, Any], phase: str, reason: str, message: str, extra: dict[str, Any] | None
    ) -> dict[str, Any]:
        status = body.get("status") or {}
        timestamp = now()
        generation = acted_on(body)
        patch: dict[str, Any] = {
            "phase": phase,
            "observedGeneration": generation,
            "conditions": merge_conditions(
                status.get("conditions") or [],
                phase_conditions(phase, reason, message or f"{phase}: {reason}"),
                generation=generation,
                timestamp=timestamp,
            ),
            **(extra or {}),
        }
        if phase == FAILED:
            patch["error"] = message or reason
        if phase in TERMINAL_PHASES:
            patch["completedAt"] = timestamp
        return patch

    async def flag(self, namespace: str, name: str, *, reason: str, message: str) -> bool:
        """Say on an unfinished resource why its training pod cannot run (``status.error``, the TrainingPodReady
        and Ready conditions), without changing its phase; True when this is news (then an Event is posted)."""
        return await self._pod_condition(namespace, name, ok=False, reason=reason, message=message)

    async def unflag(self, namespace: str, name: str) -> bool:
        """The training pod runs now: clear what ``flag`` said."""
        return await self._pod_condition(
            namespace, name, ok=True, reason="PodRunning", message="the training pod runs"
        )

    async def _pod_condition(self, namespace: str, name: str, *, ok: bool, reason: str, message: str) -> bool:
        async with self._locks[(namespace, name)]:
            for _ in range(CONFLICT_RETRIES):
                body = await self._fresh(namespace, name)
                status = (body or {}).get("status") or {}
                if body is None or status.get("phase") in TERMINAL_PHASES:
                    return False
                current = {c.get("type"): c for c in status.get("conditions") or []}.get(POD_READY) or {}
                if (current.get("status"), current.get("reason")) == ("True" if ok else "False", reason) or (
                    ok and not current
                ):
                    return False
                updates = [(POD_READY, "True" if ok else "False", reason, message)]
                if not ok:
                    updates.append(("Ready", "False", reason, message))
                patch = {
                    "error": None if ok else message,
                    "conditions": merge_conditions(
                        status.get("conditions") or [], updates, generation=acted_on(body), timestamp=now()
                    ),
                }
                if await self._write(namespace, name, body, patch):
                    break
            else:
                return False
        if not ok:
            await self.events.post(body, kind=WARNING, reason=reason, message=message)
        return True

    async def progress(self, namespace: str, name: str, event: dict[str, Any]) -> bool:
        """Record a trainer progress event (and the attention it trains with, once it says); moves Queued/Preparing
        forward with the trainer's stage. False when the resource is gone or finished (a late report changes
        nothing)."""
        async with self._locks[(namespace, name)]:
            for _ in range(CONFLICT_RETRIES):
                body = await self._fresh(namespace, name)
                if body is None:
                    return False
                status = body.get("status") or {}
                current = status.get("phase")
                if current in TERMINAL_PHASES or current == LOADING:
                    return False
                timestamp = now()
                patch: dict[str, Any] = {"progress": progress_status(event, timestamp)}
                if event.get("stage") == STAGE_DONE and event.get("s3_prefix"):
                    patch["checkpointPath"] = str(event["s3_prefix"])
                if (flash_attention := event_flash_attention(event)) is not None:
                    patch[FLASH_ATTENTION_STATUS] = flash_attention  # config.flash_attn on the REST API
                proposed = STAGE_PHASE.get(str(event.get("stage")))
                entered = proposed if proposed is not None and may_advance(current, proposed) else None
                if entered:
                    generation = acted_on(body)
                    message = f"trainer stage {event.get('stage')}"
                    patch["phase"] = entered
                    patch["observedGeneration"] = generation
                    patch["conditions"] = merge_conditions(
                        status.get("conditions") or [],
                        phase_conditions(entered, entered, message),
                        generation=generation,
                        timestamp=timestamp,
                    )
                if await self._write(namespace, name, body, patch):
                    break
            else:
                return False
        if entered:
            await self.events.post(
                body, kind=NORMAL, reason=entered, message=f"trainer stage {event.get('stage')}"
            )
        return True
