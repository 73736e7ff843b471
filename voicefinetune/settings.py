"""Configuration from the environment: the original API's variables with the original service's defaults, plus ``VFT_*``.

This is the one place that reads configuration variables; every component takes a ``Settings``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

SEED_BASE_MODEL = "Qwen/Qwen3-TTS-12Hz-1.7B-Base"
SEED_VOICE_DESIGN_MODEL = "Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign"
ENGINES = ("fast", "upstream")  # VFT_ENGINE: the inference server's own decode loop, or qwen_tts's generate
# VFT_SCHEDULER: one continuously batched decode loop per resident model, or fused calls of up to max_batch items
SCHEDULERS = ("continuous", "batch")


def parse_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def read_env_fields(cls: type, environ: Mapping[str, str]) -> dict[str, Any]:
    """Parsed values for the dataclass fields of ``cls`` whose ``env`` metadata names a variable that is set.

    An empty variable counts as unset (Helm and shells often render "unset" that way).
    """
    values: dict[str, Any] = {}
    for f in fields(cls):
        name = f.metadata.get("env")
        if name and environ.get(name, "") != "":
            parsed = f.metadata.get("parse", str)(environ[name])
            if parsed is not None:
                values[f.name] = parsed
    return values


@dataclass(frozen=True)
class Settings:
    # name: (environment variable, parser) in the field metadata; the default is the original service's.
    device: str = field(default="cuda:0", metadata={"env": "DEVICE"})
    use_flash_attn: bool = field(default=True, metadata={"env": "USE_FLASH_ATTN", "parse": parse_bool})
    gpu_idle_timeout: int = field(default=300, metadata={"env": "GPU_IDLE_TIMEOUT", "parse": int})
    gpu_max_concurrency: int = field(default=16, metadata={"env": "GPU_MAX_CONCURRENCY", "parse": int})
    gpu_max_models: int = field(default=4, metadata={"env": "GPU_MAX_MODELS", "parse": int})
    # LoRA voices attached to each resident base model (their own cache: they take no GPU_MAX_MODELS slot)
    gpu_max_adapters: int = field(default=64, metadata={"env": "GPU_MAX_ADAPTERS", "parse": int})
    s3_access_key: str | None = field(default=None, metadata={"env": "E2E_ACCESS_KEY"})
    s3_secret_key: str | None = field(default=None, metadata={"env": "E2E_SECRET_KEY"})
    s3_bucket: str = field(default="qwen3-tts", metadata={"env": "E2E_BUCKET"})
    s3_endpoint_url: str = field(
        default="https://objectstore.e2enetworks.net", metadata={"env": "E2E_ENDPOINT_URL"}
    )

    data_dir: Path = field(default=Path("data"), metadata={"env": "VFT_DATA_DIR", "parse": Path})
    base_model: str = field(default=SEED_BASE_MODEL, metadata={"env": "VFT_BASE_MODEL"})
    voice_design_model: str = field(
        default=SEED_VOICE_DESIGN_MODEL, metadata={"env": "VFT_VOICE_DESIGN_MODEL"}
    )
    tiny_models: bool = field(default=False, metadata={"env": "VFT_TINY_MODELS", "parse": parse_bool})
    tiny_models_dir: Path | None = field(default=None, metadata={"env": "VFT_TINY_MODELS_DIR", "parse": Path})
    s3_region: str = field(default="us-east-1", metadata={"env": "VFT_S3_REGION"})
    s3_max_attempts: int = field(default=5, metadata={"env": "VFT_S3_MAX_ATTEMPTS", "parse": int})
    s3_connect_timeout: float = field(default=5.0, metadata={"env": "VFT_S3_CONNECT_TIMEOUT", "parse": float})
    disk_cache_gb: float = field(default=20.0, metadata={"env": "VFT_DISK_CACHE_GB", "parse": float})
    max_concurrent_trainings: int = field(
        default=1, metadata={"env": "VFT_MAX_CONCURRENT_TRAININGS", "parse": int}
    )
    max_text_chars: int = field(default=2000, metadata={"env": "VFT_MAX_TEXT_CHARS", "parse": int})
    allow_private_urls: bool = field(
        default=False, metadata={"env": "VFT_ALLOW_PRIVATE_URLS", "parse": parse_bool}
    )
    # Voice-clone reference URLs on these origins (scheme://host:port, comma-separated) may be private or loopback.
    trusted_url_origins: str = field(default="", metadata={"env": "VFT_TRUSTED_URL_ORIGINS"})
    inference_url: str | None = field(default=None, metadata={"env": "VFT_INFERENCE_URL"})
    namespace: str = field(default="default", metadata={"env": "VFT_NAMESPACE"})
    # Trainer progress: events are also POSTed here (bearer token), besides the JSON lines on stdout.
    progress_url: str | None = field(default=None, metadata={"env": "VFT_PROGRESS_URL"})
    progress_token: str | None = field(default=None, repr=False, metadata={"env": "VFT_PROGRESS_TOKEN"})
    # Inference request fusion: concurrent requests for one model wait this long to share one generate call.
    inference_batch_window_ms: float = field(
        default=15.0, metadata={"env": "VFT_INFERENCE_BATCH_WINDOW_MS", "parse": float}
    )
    inference_max_batch: int = field(default=8, metadata={"env": "VFT_INFERENCE_MAX_BATCH", "parse": int})
    # Optional API key(s), comma-separated (rotation); empty: no authentication (the original service's behaviour).
    api_key: str | None = field(default=None, repr=False, metadata={"env": "VFT_API_KEY"})
    # Webhook events are signed with HMAC-SHA256 under this key (X-Voicefinetune-Signature); empty: sent unsigned.
    webhook_secret: str | None = field(default=None, repr=False, metadata={"env": "VFT_WEBHOOK_SECRET"})
    # With an API key, /metrics stays open for Prometheus unless this is 0 (it carries counts, not request content).
    metrics_public: bool = field(default=True, metadata={"env": "VFT_METRICS_PUBLIC", "parse": parse_bool})
    # Caps on request sizes (bytes): JSON bodies (413 before parsing) and multipart dataset uploads (413 while streaming).
    max_json_bytes: int = field(default=1024**2, metadata={"env": "VFT_MAX_JSON_BYTES", "parse": int})
    max_upload_bytes: int = field(default=4 * 1024**3, metadata={"env": "VFT_MAX_UPLOAD_BYTES", "parse": int})
    # Deadlines of both servers' connections (seconds, 0: none): a request's headers must arrive within
    # header_timeout of its first byte, a body may pause at most body_timeout between two reads.
    header_timeout: float = field(default=15.0, metadata={"env": "VFT_HEADER_TIMEOUT", "parse": float})
    body_timeout: float = field(default=60.0, metadata={"env": "VFT_BODY_TIMEOUT", "parse": float})
    # How long a request waits for a VRAM model slot (all GPU_MAX_MODELS busy) before a 503 with Retry-After.
    vram_wait_timeout: float = field(default=120.0, metadata={"env": "VFT_VRAM_WAIT_TIMEOUT", "parse": float})
    # Fine-tuning recipe: "compact" (frozen text embedding, bf16 AdamW moments, bf16 weights with a 16-bit extension
    # on CUDA: fits 20 GB at 1.7B) or "seed" (fp32 weights, gradients and AdamW moments, all trained: ~40 GB).
    train_recipe: str = field(default="compact", metadata={"env": "VFT_TRAIN_RECIPE"})
    # Refuse to start a CUDA training whose estimated peak exceeds the free GPU memory (0: try anyway).
    train_fit_check: bool = field(default=True, metadata={"env": "VFT_TRAIN_FIT_CHECK", "parse": parse_bool})
    # Inference decode loop: "fast" (the inference server's own engine) or "upstream" (qwen_tts's generate, kept for
    # comparison and as a fallback).
    engine: str = field(default="fast", metadata={"env": "VFT_ENGINE", "parse": lambda v: v.strip().lower()})
    # How requests share a model (fast engine only): "continuous" (rows join and leave a running loop every frame)
    # or "batch" (the batcher's fused calls, each running until its rows end).
    scheduler: str = field(
        default="continuous", metadata={"env": "VFT_SCHEDULER", "parse": lambda v: v.strip().lower()}
    )
    # Rows a model's continuous loop runs at once; unset: 16 on CUDA, 8 on CPU (`engine_slots_for`).
    engine_slots: int | None = field(default=None, metadata={"env": "VFT_ENGINE_SLOTS", "parse": int})
    # On CUDA the continuous loop records each batch-size bucket's frame as a CUDA graph and replays it (0: eager).
    cuda_graphs: bool = field(default=True, metadata={"env": "VFT_CUDA_GRAPHS", "parse": parse_bool})

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:  # a wrong VFT_ENGINE stops a server at start, not each request
            raise ValueError(f"VFT_ENGINE={self.engine!r} is not one of: {', '.join(ENGINES)}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"VFT_SCHEDULER={self.scheduler!r} is not one of: {', '.join(SCHEDULERS)}")

    @property
    def continuous(self) -> bool:
        """Requests share one continuously batched decode loop per model (the fast engine's scheduler)."""
        return self.engine == "fast" and self.scheduler == "continuous"

    def engine_slots_for(self, on_gpu: bool) -> int:
        return self.engine_slots if self.engine_slots else (16 if on_gpu else 8)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        return cls(**{**read_env_fields(cls, os.environ if environ is None else environ), **overrides})

    @staticmethod
    def env_name(field_name: str) -> str:
        """The environment variable behind a field, e.g. ``s3_access_key`` -> ``E2E_ACCESS_KEY``."""
        return next(f.metadata["env"] for f in fields(Settings) if f.name == field_name)

    def to_env(self, field_names: Iterable[str] | None = None) -> dict[str, str]:
        """Environment variables from which ``Settings.from_env`` rebuilds these settings (or just those fields)."""
        wanted = None if field_names is None else set(field_names)
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (wanted is not None and f.name not in wanted):
                continue
            env[f.metadata["env"]] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env

    @property
    def storage_configured(self) -> bool:
        return bool(self.s3_access_key and self.s3_secret_key)

    @property
    def jobs_dir(self) -> Path:
        """Per-job folders (dataset, checkpoints); the disk LRU works here."""
        return self.data_dir / "jobs"

    @property
    def state_dir(self) -> Path:
        """Job records, the ops log and the voice registry."""
        return self.data_dir / "state"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id


def env_table() -> list[tuple[str, str]]:
    """(variable, default) for every variable Settings reads, for docs and `vft` help."""
    return [(f.metadata["env"], "" if f.default is None else str(f.default)) for f in fields(Settings)]
