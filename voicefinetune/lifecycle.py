"""The life of a fine-tuning job, written once: statuses and phases, trainer stages, progress fields, defaults.

Everything here is derived from the REST schema (``schemas.py``), the one source: the REST job status names come
from ``JobStatusName``, the Kubernetes phases are the same names capitalised, the progress fields are those of
``Progress`` (camelCase in ``status.progress``), and the training defaults are ``FinetuneRequest``'s (the CRD's
schema defaults and ``vft train``'s argument defaults are checked against them by tests).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast, get_args

from .schemas import FinetuneRequest, JobStatusName, Progress


def camel_case(snake: str) -> str:
    """``total_epochs`` -> ``totalEpochs`` (the Kubernetes spelling of a REST field)."""
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# --- job statuses (REST) and phases (Kubernetes): one list, two spellings -----------------------------------------
JOB_STATUSES: tuple[JobStatusName, ...] = get_args(JobStatusName)
QUEUED, PREPARING, TRAINING, LOADING, READY, FAILED = JOB_STATUSES
TERMINAL_STATUSES = (READY, FAILED)


def phase_of(status: str) -> str:
    """The Kubernetes phase of a REST status (``training`` -> ``Training``)."""
    return status.capitalize()


def status_of(phase: str | None) -> JobStatusName:
    """The REST status of a Kubernetes phase; a resource with no phase yet is queued."""
    # The CRD's schema allows only PHASES; the Job built from this validates the name again.
    return cast(JobStatusName, (phase or phase_of(QUEUED)).lower())


PHASES: tuple[str, ...] = tuple(phase_of(status) for status in JOB_STATUSES)
TERMINAL_PHASES: tuple[str, ...] = tuple(phase_of(status) for status in TERMINAL_STATUSES)

# --- trainer stages (the `stage` of a progress event) --------------------------------------------------------------
STAGE_PREPARING, STAGE_TRAINING, STAGE_UPLOADING, STAGE_DONE, STAGE_FAILED = (
    "preparing",
    "training",
    "uploading",
    "done",
    "failed",
)
# Stage -> job status while the job runs; publishing ("uploading") and "done" are still training for the user
# until the voice is loaded. A failed stage ends the job through its own path (error message, exit code).
STAGE_STATUS = {
    STAGE_PREPARING: PREPARING,
    STAGE_TRAINING: TRAINING,
    STAGE_UPLOADING: TRAINING,
    STAGE_DONE: TRAINING,
}

# --- progress: snake_case in REST and trainer events, camelCase in status.progress -------------------------------
PROGRESS_FIELDS: tuple[str, ...] = tuple(Progress.model_fields)
PROGRESS_CAMEL: dict[str, str] = {name: camel_case(name) for name in PROGRESS_FIELDS}


def event_progress(event: Mapping[str, Any]) -> dict[str, int | float]:
    """The numeric progress fields of a trainer event, each read as its ``Progress`` type; a value that does not
    read as a finite number (text, ``1e999``, NaN, null) is left out: a child's odd event never breaks its reader."""
    numbers: dict[str, int | float] = {}
    for name in PROGRESS_FIELDS:
        if name == "stage" or event.get(name) is None:
            continue
        kind = int if Progress.model_fields[name].annotation is int else float
        try:
            number = kind(event[name])
        except (TypeError, ValueError, OverflowError):
            continue
        if math.isfinite(number):
            numbers[name] = number
    return numbers


# --- the attention a trainer loaded: ``flash_attn`` in its events (as in the REST ``config``), a status field ------
FLASH_ATTN_EVENT = "flash_attn"
FLASH_ATTENTION_STATUS = "flashAttention"


def event_flash_attention(event: Mapping[str, Any]) -> bool | None:
    """Whether the trainer of ``event`` trains with flash attention; None when the event does not say (not loaded
    yet, or not a boolean)."""
    value = event.get(FLASH_ATTN_EVENT)
    return value if isinstance(value, bool) else None


def progress_from_status(progress: dict[str, Any]) -> dict[str, Any]:
    """The REST progress fields of a ``status.progress`` object (camelCase in, snake_case out)."""
    return {snake: progress[camel] for snake, camel in PROGRESS_CAMEL.items() if camel in progress}


# Awaited first on /infer/{job_id}* and by the OpenAI routes with the voice: raises 404 for an unknown job, 409 for
# one that is not ready. The facade makes one from its backend; the inference server takes one when it runs inside.
JobGate = Callable[[str], Awaitable[None]]


# --- the /finetune body: defaults and the spec's camelCase fields ------------------------------------------------
DEFAULTS: dict[str, Any] = {name: field.default for name, field in FinetuneRequest.model_fields.items()}
DEFAULT_NUM_EPOCHS: int = DEFAULTS["num_epochs"]
DEFAULT_BATCH_SIZE: int = DEFAULTS["batch_size"]
DEFAULT_LR: float = DEFAULTS["lr"]
DEFAULT_SPEAKER_NAME: str = DEFAULTS["speaker_name"]
DEFAULT_GRADIENT_ACCUMULATION_STEPS: int = DEFAULTS["gradient_accumulation_steps"]
DEFAULT_LANGUAGE: str = DEFAULTS["language"]
DEFAULT_METHOD: str = DEFAULTS["method"]
DEFAULT_LORA_RANK: int = DEFAULTS["lora_rank"]

# camelCase spec field -> /finetune field. `job_id` is the resource's name, not a spec field.
SPEC_FIELDS: dict[str, str] = {
    camel_case(name): name for name in FinetuneRequest.model_fields if name != "job_id"
}
