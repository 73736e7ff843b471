"""Prometheus metrics of the inference server (``vft_inference_*``), exposed by the shared ``/metrics``."""

from __future__ import annotations

from typing import TypedDict

from prometheus_client import Counter, Gauge, Histogram

from voicefinetune.metrics import NAMESPACE

SUBSYSTEM = "inference"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
AGE_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)


class _Name(TypedDict):
    """The naming keywords of a prometheus metric: typed per key, so ``**_name(...)`` passes type checking."""

    name: str
    namespace: str
    subsystem: str


def _name(name: str) -> _Name:
    return {"name": name, "namespace": NAMESPACE, "subsystem": SUBSYSTEM}


REQUEST_SECONDS = Histogram(
    documentation="Latency of inference server requests by endpoint (route template) and status code",
    labelnames=("method", "endpoint", "status"),
    buckets=LATENCY_BUCKETS,
    **_name("request_duration_seconds"),
)
AUDIO_SECONDS = Counter(
    documentation="Seconds of audio generated, by kind of model",
    labelnames=("kind",),
    **_name("audio_generated_seconds"),
)
ITEMS = Counter(
    documentation="Items (utterances) generated, by kind of model",
    labelnames=("kind",),
    **_name("items_generated"),
)
BATCH_SIZE = Histogram(
    documentation="Items fused into one generate call",
    buckets=(1, 2, 4, 8, 16, 32, 64),
    **_name("generate_batch_size"),
)
GENERATE_SECONDS = Histogram(
    documentation="Duration of one (fused) generate call",
    buckets=LATENCY_BUCKETS,
    **_name("generate_seconds"),
)
MODEL_LOAD_SECONDS = Histogram(
    documentation="Model load duration, disk to memory (including an S3 restore)",
    buckets=LOAD_BUCKETS,
    **_name("model_load_seconds"),
)
MODEL_LOAD_FAILURES = Counter(documentation="Model loads that failed", **_name("model_load_failures"))
MODEL_UNLOAD_SECONDS = Histogram(
    documentation="Model unload duration",
    buckets=LOAD_BUCKETS,
    **_name("model_unload_seconds"),
)
CACHE_HITS = Counter(documentation="Requests that found their model loaded", **_name("cache_hits"))
CACHE_MISSES = Counter(documentation="Requests that had to load their model", **_name("cache_misses"))
CACHE_EVICTIONS = Counter(documentation="Models evicted to make room for another", **_name("cache_evictions"))
AGE_AT_EVICTION_SECONDS = Histogram(
    documentation="Time a model had been loaded when it was evicted",
    buckets=AGE_BUCKETS,
    **_name("age_at_eviction_seconds"),
)
MODELS_LOADED = Gauge(documentation="Models loaded now", **_name("models_loaded"))
LOADED_MODEL_BYTES = Gauge(
    documentation="Parameter bytes of the loaded models",
    **_name("loaded_model_bytes"),
)
VRAM_USED_BYTES = Gauge(
    documentation="GPU memory allocated by torch (0 without CUDA)",
    **_name("vram_used_bytes"),
)
S3_UPLOAD_SECONDS = Histogram(
    documentation="Duration of one audio upload to S3",
    buckets=LATENCY_BUCKETS,
    **_name("s3_upload_seconds"),
)
DISK_DELETIONS = Counter(
    documentation="Model folders deleted by the disk LRU (S3 holds them)",
    **_name("disk_deletions"),
)
DISK_RESTORES = Counter(documentation="Model folders restored from S3", **_name("disk_restores"))
CLONE_PROMPT_CACHE_HITS = Counter(
    documentation="Voice-clone requests whose reference's prompt the loaded Base model had (or was computing)",
    **_name("clone_prompt_cache_hits"),
)
CLONE_PROMPTS_COMPUTED = Counter(
    documentation="Voice-clone prompts computed (speaker encoder and codec encoding of a reference)",
    **_name("clone_prompts_computed"),
)
# The decode engine (VFT_ENGINE) per generate call or stream; mode: "batch" (whole utterances) or "stream".
ENGINE_FIRST_AUDIO_SECONDS = Histogram(
    documentation="Time from the start of generation to its first audio (a whole batch's end without streaming)",
    labelnames=("engine", "mode"),
    buckets=LATENCY_BUCKETS,
    **_name("engine_time_to_first_audio_seconds"),
)
ENGINE_REAL_TIME_FACTOR = Histogram(
    documentation="Seconds of audio generated per wall second of generation (above 1: faster than real time)",
    labelnames=("engine", "mode"),
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 50, 100),
    **_name("engine_real_time_factor"),
)
ENGINE_FRAMES_PER_SECOND = Histogram(
    documentation="Codec frames (80 ms each) generated per wall second, summed over a fused batch's rows",
    labelnames=("engine", "mode"),
    buckets=(1, 5, 12.5, 25, 50, 100, 250, 500, 1000, 2500),
    **_name("engine_frames_per_second"),
)


def observe_engine(
    *, engine: str, mode: str, first_audio: float, seconds: float, audio_seconds: float, frames: int
) -> None:
    """One generate call's or stream's engine figures."""
    ENGINE_FIRST_AUDIO_SECONDS.labels(engine, mode).observe(first_audio)
    if seconds > 0:
        ENGINE_REAL_TIME_FACTOR.labels(engine, mode).observe(audio_seconds / seconds)
        ENGINE_FRAMES_PER_SECOND.labels(engine, mode).observe(frames / seconds)


# The continuous decode loop of each resident model (VFT_SCHEDULER=continuous); model: the model cache's key.
ENGINE_QUEUE_WAIT_SECONDS = Histogram(
    documentation="Time a request waited for decode slots before its prefill",
    buckets=LATENCY_BUCKETS,
    **_name("engine_queue_wait_seconds"),
)
ENGINE_SLOTS_OCCUPIED = Gauge(
    documentation="Decode slots holding a running row, per model",
    labelnames=("model",),
    **_name("engine_slots_occupied"),
)
ENGINE_FRAMES = Counter(
    documentation="Codec frames (80 ms each) produced by a model's continuous loop, summed over rows (rate: frames/s)",
    labelnames=("model",),
    **_name("engine_frames"),
)
