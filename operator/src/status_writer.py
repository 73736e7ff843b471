"""Writes a VoiceFinetune's status: phase transitions (with conditions and an Event) and training progress.

Three sources write it concurrently (Job events, the progress receiver, voice loading), so every write reads the
fresh object and applies the phase rules under a per-resource lock: a late progress report can never move a
resource back from Loading to Training.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from ..cluster.client import KubeClient
from ..cluster.resource import object_path
from ..lifecycle import TERMINAL_PHASES
from .events import NORMAL, WARNING, EventRecorder
from .status import (
    FAILED,
    LOADING,
    STAGE_PHASE,
    may_advance,
    merge_conditions,
    now,
    phase_conditions,
    progress_status,
)

log = logging.getLogger(__name__)


class StatusWriter:
    def __init__(self, kube: KubeClient, events: EventRecorder):
        self.kube = kube
        self.events = events
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)

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
            body = await self._fresh(namespace, name)
            if body is None:
                return None
            status = body.get("status") or {}
            if not may_advance(status.get("phase"), phase):
                if extra and any(status.get(key) != value for key, value in extra.items()):
                    await self.kube.patch(object_path(namespace, name, "status"), {"status": extra})
                return None
            timestamp = now()
            generation = body["metadata"].get("generation")
            text = message or f"{phase}: {reason}"
            patch: dict[str, Any] = {
                "phase": phase,
                "observedGeneration": generation,
                "conditions": merge_conditions(
                    status.get("conditions") or [],
                    phase_conditions(phase, reason, text),
                    generation=generation,
                    timestamp=timestamp,
                ),
                **(extra or {}),
            }
            if phase == FAILED:
                patch["error"] = message or reason
            if phase in TERMINAL_PHASES:
                patch["completedAt"] = timestamp
            await self.kube.patch(object_path(namespace, name, "status"), {"status": patch})
        await self.events.post(body, kind=WARNING if phase == FAILED else NORMAL, reason=reason, message=text)
        log.info("%s/%s: %s -> %s (%s)", namespace, name, status.get("phase"), phase, reason)
        return body

    async def progress(self, namespace: str, name: str, event: dict[str, Any]) -> bool:
        """Record a trainer progress event; moves Queued/Preparing forward with the trainer's stage. False when the
        resource is gone or finished (a late report changes nothing)."""
        async with self._locks[(namespace, name)]:
            body = await self._fresh(namespace, name)
            if body is None:
                return False
            status = body.get("status") or {}
            current = status.get("phase")
            if current in TERMINAL_PHASES or current == LOADING:
                return False
            timestamp = now()
            patch: dict[str, Any] = {"progress": progress_status(event, timestamp)}
            if event.get("stage") == "done" and event.get("s3_prefix"):
                patch["checkpointPath"] = str(event["s3_prefix"])
            proposed = STAGE_PHASE.get(str(event.get("stage")))
            entered = proposed is not None and may_advance(current, proposed)
            if entered:
                generation = body["metadata"].get("generation")
                message = f"trainer stage {event.get('stage')}"
                patch["phase"] = proposed
                patch["observedGeneration"] = generation
                patch["conditions"] = merge_conditions(
                    status.get("conditions") or [],
                    phase_conditions(proposed, proposed, message),
                    generation=generation,
                    timestamp=timestamp,
                )
            await self.kube.patch(object_path(namespace, name, "status"), {"status": patch})
        if entered:
            await self.events.post(body, kind=NORMAL, reason=proposed, message=f"trainer stage {event.get('stage')}")
        return True

