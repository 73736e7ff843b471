"""The operator's Prometheus metrics (controller-runtime's set, under ``vft_operator_``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

from voicefinetune.lifecycle import PHASES
from voicefinetune.metrics import NAMESPACE

SUBSYSTEM = "operator"

RECONCILE_SECONDS = Histogram(
    "reconcile_duration_seconds",
    "Time spent in one reconciliation, by handler",
    ["handler"],
    namespace=NAMESPACE,
    subsystem=SUBSYSTEM,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RECONCILE_TOTAL = Counter(
    "reconcile_total",
    "Reconciliations by handler and result (success, error, requeue)",
    ["handler", "result"],
    namespace=NAMESPACE,
    subsystem=SUBSYSTEM,
)
RESOURCES = Gauge(
    "resources",
    "VoiceFinetune resources the operator sees, by phase",
    ["phase"],
    namespace=NAMESPACE,
    subsystem=SUBSYSTEM,
)
JOB_SECONDS = Histogram(
    "training_job_duration_seconds",
    "Training Job run time from start to completion, by outcome",
    ["outcome"],
    namespace=NAMESPACE,
    subsystem=SUBSYSTEM,
    buckets=(60, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400),
)
PROGRESS_EVENTS = Counter(
    "progress_events_total",
    "Trainer progress reports received, by result (applied, throttled, rejected)",
    ["result"],
    namespace=NAMESPACE,
    subsystem=SUBSYSTEM,
)
INFERENCE_REPAIRS = Counter(
    "inference_repairs_total",
    "Inference Deployment/Service objects created or patched back after drift or deletion",
    ["kind", "action"],
    namespace=NAMESPACE,
    subsystem=SUBSYSTEM,
)


@contextmanager
def reconciling(handler: str) -> Iterator[None]:
    """Time a handler and count its result: success, or error when it raised (Kopf retries those)."""
    start = time.perf_counter()
    result = "success"
    try:
        yield
    except BaseException:
        result = "error"
        raise
    finally:
        RECONCILE_SECONDS.labels(handler).observe(time.perf_counter() - start)
        RECONCILE_TOTAL.labels(handler, result).inc()


class PhaseCounter:
    """The phase of every resource seen, feeding the per-phase gauge."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}

    def seen(self, namespace: str, name: str, phase: str | None) -> None:
        self._phases[(namespace, name)] = phase or "Pending"
        self._publish()

    def gone(self, namespace: str, name: str) -> None:
        self._phases.pop((namespace, name), None)
        self._publish()

    def _publish(self) -> None:
        counts = dict.fromkeys(PHASES, 0)
        counts["Pending"] = 0
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            RESOURCES.labels(phase).set(count)


# Every label value known in advance, exported from start: a fresh install shows zeros, not "No data".
HANDLERS = ("create", "resume", "resync", "delete", "job", "pod")
RESULTS = ("success", "error")
OUTCOMES = ("succeeded", "failed")
PROGRESS_RESULTS = ("applied", "throttled", "ignored", "rejected")
REPAIRS = tuple(
    (kind, action) for kind in ("Deployment", "Service") for action in ("created", "patched", "replaced")
)


def initialise() -> None:
    for handler in HANDLERS:
        RECONCILE_SECONDS.labels(handler)
        for result in RESULTS:
            RECONCILE_TOTAL.labels(handler, result)
    for phase in (*PHASES, "Pending"):
        RESOURCES.labels(phase).set(0)
    for outcome in OUTCOMES:
        JOB_SECONDS.labels(outcome)
    for result in PROGRESS_RESULTS:
        PROGRESS_EVENTS.labels(result)
    for kind, action in REPAIRS:
        INFERENCE_REPAIRS.labels(kind, action)


initialise()
