"""The facade's own Prometheus metrics (served on /metrics with everything else under ``vft_``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from ..lifecycle import TERMINAL_STATUSES
from ..metrics import NAMESPACE

JOBS_SUBMITTED = Counter(
    "jobs_submitted_total",
    "Fine-tuning jobs accepted by POST /finetune",
    ["source"],
    namespace=NAMESPACE,
    subsystem="facade",
)
JOBS_FINISHED = Counter(
    "jobs_finished_total",
    "Fine-tuning jobs that reached a final state",
    ["status"],
    namespace=NAMESPACE,
    subsystem="facade",
)
JOB_DURATION = Histogram(
    "job_duration_seconds",
    "Time from submission to ready or failed",
    ["status"],
    namespace=NAMESPACE,
    subsystem="facade",
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800),
)

# The label values known in advance, exported from start (a fresh install shows zeros, not "No data").
for _source in ("s3", "upload"):
    JOBS_SUBMITTED.labels(source=_source)
for _status in TERMINAL_STATUSES:
    JOBS_FINISHED.labels(status=_status)
    JOB_DURATION.labels(status=_status)
