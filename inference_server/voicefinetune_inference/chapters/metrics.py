"""Prometheus metrics of chapters (``vft_inference_synthesis_*``): segments rendered (their rate is segments/s) and
the work waiting."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from voicefinetune.metrics import NAMESPACE
from voicefinetune_inference.metrics import SUBSYSTEM

SEGMENTS = Counter(
    "synthesis_segments",
    "Chapter segments rendered, by outcome (ok; regenerated: a retry after the quality guard refused an attempt)",
    labelnames=("outcome",),
    namespace=NAMESPACE,
    subsystem=SUBSYSTEM,
)
AUDIO_SECONDS = Counter(
    "synthesis_audio_seconds", "Seconds of chapter audio joined", namespace=NAMESPACE, subsystem=SUBSYSTEM
)
ACTIVE_CHAPTERS = Gauge(
    "synthesis_active_chapters",
    "Chapters queued or running in this process",
    namespace=NAMESPACE,
    subsystem=SUBSYSTEM,
)
PENDING_SEGMENTS = Gauge(
    "synthesis_pending_segments",
    "Segments still to render in this process (the chapter queue's depth)",
    namespace=NAMESPACE,
    subsystem=SUBSYSTEM,
)
