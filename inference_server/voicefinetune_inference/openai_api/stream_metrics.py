"""Prometheus metrics of streamed speech (``vft_inference_stream_*``), exposed by the shared ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from voicefinetune_inference.metrics import LATENCY_BUCKETS, _name

FIRST_AUDIO_SECONDS = Histogram(
    documentation="Time from a streamed speech request to its first audio bytes, by response format",
    labelnames=("format",),
    buckets=LATENCY_BUCKETS,
    **_name("stream_first_audio_seconds"),
)
REAL_TIME_FACTOR = Histogram(
    documentation="Seconds of audio a stream produced per second it took (above 1: faster than real time)",
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 50),
    **_name("stream_real_time_factor"),
)
STREAMED_BYTES = Counter(
    documentation="Bytes of audio sent by streamed speech responses, by response format",
    labelnames=("format",),
    **_name("stream_bytes"),
)
STREAMS = Counter(
    documentation="Streamed speech responses by result (completed, disconnected, failed)",
    labelnames=("result",),
    **_name("streams"),
)
