"""The status rules of a VoiceFinetune, as pure functions: which phase may follow which, the conditions each phase
sets, and how a trainer progress event reads in ``status.progress``."""

from __future__ import annotations

import datetime
from typing import Any

from voicefinetune.lifecycle import (
    PHASES,
    PROGRESS_CAMEL,
    STAGE_STATUS,
    TERMINAL_PHASES,
    event_progress,
    phase_of,
)

QUEUED, PREPARING, TRAINING, LOADING, READY, FAILED = PHASES
ORDER = {QUEUED: 0, PREPARING: 1, TRAINING: 2, LOADING: 3, READY: 4}

# Trainer stages -> phase (see lifecycle.STAGE_STATUS).
STAGE_PHASE = {stage: phase_of(status) for stage, status in STAGE_STATUS.items()}

# Condition types
JOB_CREATED = "TrainingJobCreated"
TRAINED = "TrainingSucceeded"
VOICE_LOADED = "VoiceLoaded"
READY_CONDITION = "Ready"
POD_READY = "TrainingPodReady"  # False while the training pod cannot start (image, Secret, scheduling)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def may_advance(current: str | None, proposed: str) -> bool:
    """Phases only move forward; Failed can end any unfinished phase; Ready and Failed are final."""
    if current == proposed or current in TERMINAL_PHASES:
        return False
    if proposed == FAILED or current is None:
        return True
    return ORDER.get(proposed, -1) > ORDER.get(current, -1)


def phase_conditions(phase: str, reason: str, message: str) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) of the conditions that entering ``phase`` sets."""
    if phase == QUEUED:
        return [(JOB_CREATED, "True", reason, message), (READY_CONDITION, "False", QUEUED, message)]
    if phase in (PREPARING, TRAINING):
        return [(READY_CONDITION, "False", phase, message)]
    if phase == LOADING:
        return [(TRAINED, "True", reason, message), (READY_CONDITION, "False", LOADING, message)]
    if phase == READY:
        return [(VOICE_LOADED, "True", reason, message), (READY_CONDITION, "True", "VoiceReady", message)]
    failed_step = VOICE_LOADED if reason == "LoadFailed" else TRAINED
    return [(failed_step, "False", reason, message), (READY_CONDITION, "False", reason, message)]


def merge_conditions(
    existing: list[dict[str, Any]],
    updates: list[tuple[str, str, str, str]],
    *,
    generation: int | None,
    timestamp: str,
) -> list[dict[str, Any]]:
    """Conditions with ``updates`` applied: lastTransitionTime moves only when a condition's status changes."""
    merged = {c["type"]: dict(c) for c in existing if c.get("type")}
    for kind, status, reason, message in updates:
        previous = merged.get(kind) or {}
        changed = previous.get("status") != status
        merged[kind] = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message[:2048],
            "lastTransitionTime": timestamp if changed else previous.get("lastTransitionTime", timestamp),
            **({"observedGeneration": generation} if generation is not None else {}),
        }
    return list(merged.values())


def progress_status(event: dict[str, Any], timestamp: str) -> dict[str, Any]:
    """``status.progress`` from a trainer event (snake_case fields in, camelCase out; unknown fields dropped)."""
    progress: dict[str, Any] = {"stage": str(event.get("stage")), "updatedAt": timestamp}
    for name, number in event_progress(event).items():
        progress[PROGRESS_CAMEL[name]] = number
    message = event.get("error") or event.get("message") or event.get("warning")
    if message:
        progress["message"] = str(message)[:1024]
    return progress
