"""The original API's request and response bodies (field names, types and defaults as in seed-api.md).

Item-level checks (text, filename, language) are plain functions rather than model validators so that a batch
can report one bad item in its place without refusing the whole request.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from .input_echo import short_repr
from .seeds import SEED_HELP, SEED_LIMIT

SERVICE_NAME = "qwen3-tts-finetune-api"
SAMPLE_RATE = 24000
PRESIGNED_URL_SECONDS = 24 * 3600

JobStatusName = Literal["queued", "preparing", "training", "loading", "ready", "failed"]

SUPPORTED_LANGUAGES = (
    "Auto",
    "Chinese",
    "English",
    "Japanese",
    "Korean",
    "German",
    "French",
    "Russian",
    "Portuguese",
    "Spanish",
    "Italian",
)

SPEAKER_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
SPEAKER_UNDERSCORE_DIGIT = re.compile(r"_\d")
SPEAKER_NAME_HELP = (
    "speaker_name must not contain an underscore followed by a number (e.g. use 'Hero1' instead of 'Hero_1'): "
    "it causes library parsing errors"
)
# The ids the REST API gives new jobs: DNS labels, so that one also names the job's Kubernetes objects.
API_JOB_ID_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
FILENAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
# Caps on free text fields (422 naming the field). Ids that become S3 key or folder segments are key-safe.
MAX_INSTRUCT_CHARS = 2000
MAX_REF_TEXT_CHARS = 2000
MAX_LANGUAGE_CHARS = 32
MAX_FILENAME_CHARS = 200
MAX_INLINE_BATCH_ITEMS = 32  # batch items answered inline (base64 WAVs) rather than uploaded
# Any id that becomes one folder or S3 key segment (API job ids, namespace-qualified ids and book/chapter ids fit).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
RESUME_JOB_ID_PATTERN = API_JOB_ID_PATTERN.pattern


class InvalidInput(ValueError):
    """A request value that the caller must fix; the message says how."""


def check_speaker_name(name: str) -> str:
    if SPEAKER_UNDERSCORE_DIGIT.search(name):
        raise InvalidInput(f"{SPEAKER_NAME_HELP}; got {short_repr(name)}")
    if not SPEAKER_NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            f"speaker_name must start with a letter and use only letters, digits, '_' or '-' (64 at most); got {short_repr(name)}"
        )
    return name


def is_segment_id(value: str) -> bool:
    """``value`` matches ``ID_PATTERN`` and is no ``..``-trick: safe as one folder or S3 key segment."""
    return re.fullmatch(ID_PATTERN, value) is not None and ".." not in value


def check_job_id(job_id: str) -> str:
    if not API_JOB_ID_PATTERN.fullmatch(job_id):
        raise InvalidInput(
            "job_id must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit; "
            f"got {short_repr(job_id)}"
        )
    return job_id


def check_text(text: str | None, max_chars: int) -> str:
    if text is None or not text.strip():
        raise InvalidInput("text must not be empty")
    if len(text) > max_chars:
        raise InvalidInput(f"text is {len(text)} characters long; the limit is {max_chars}")
    return text


def check_language(language: str | None) -> str:
    """Return the canonical spelling of a supported language name (case-insensitive)."""
    wanted = (language or "English").strip().lower()
    for name in SUPPORTED_LANGUAGES:
        if name.lower() == wanted:
            return name
    raise InvalidInput(
        f"unsupported language {short_repr(language)}; supported: {', '.join(SUPPORTED_LANGUAGES)}"
    )


def check_filename(filename: str, *, field: str = "filename") -> str:
    """A safe single-segment object name ending in .wav (appended when missing); ``field`` names it in the error."""
    if not FILENAME_PATTERN.fullmatch(filename) or ".." in filename:
        raise InvalidInput(
            f"unsafe {field} {short_repr(filename)}: use letters, digits, '.', '_' or '-' only, no folders and no '..'"
        )
    return filename if filename.lower().endswith(".wav") else f"{filename}.wav"


# --- fine-tuning -------------------------------------------------------------------------------------------------

TrainMethod = Literal["full", "lora"]
# The talker's and the code predictor's projections a LoRA voice may adapt (each decoder layer's attention and MLP).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MAX_LORA_RANK = 256


def check_lora_targets(value: Any) -> list[str] | None:
    """``lora_targets`` as a list of projection names; a form field may send them comma-separated."""
    if value is None:
        return None
    names = [part.strip() for part in value.split(",")] if isinstance(value, str) else list(value)
    unknown = [name for name in names if name not in LORA_TARGETS]
    if unknown or not names:
        raise ValueError(
            f"lora_targets must name some of {', '.join(LORA_TARGETS)}; got {short_repr(unknown or names)}"
        )
    return list(dict.fromkeys(names))


class FinetuneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_s3_key: str = Field(description="S3 key of the dataset .zip, e.g. datasets/Hero1/dataset.zip")
    speaker_name: str = Field("speaker_custom", description="Name of the fine-tuned voice (no '_' + number)")
    num_epochs: int = Field(15, ge=1, le=1000, description="Training epochs")
    batch_size: int = Field(2, ge=1, le=1024, description="Batch size (increase on larger GPUs)")
    lr: float = Field(1e-6, gt=0, le=1.0, description="Learning rate")
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        le=1024,
        description="Batches whose gradients add up to one optimizer step (effective batch: batch_size × this)",
    )
    language: str = Field(
        "English",
        max_length=MAX_LANGUAGE_CHARS,
        description="Language of the dataset's speech: the voice trains on that language's prompt layout (the one "
        "/infer uses by default) and on the 'Auto' layout",
    )
    method: TrainMethod = Field(
        "full",
        description="full: every weight trains (a full checkpoint per voice); lora: low-rank adapters on the "
        "talker's and code predictor's projections (a small voice served on its resident base model)",
    )
    lora_rank: int = Field(16, ge=1, le=MAX_LORA_RANK, description="LoRA rank (method lora)")
    lora_alpha: int | None = Field(
        None, ge=1, le=4 * MAX_LORA_RANK, description="LoRA alpha (method lora); default 2 × lora_rank"
    )
    lora_targets: list[str] | None = Field(
        None,
        description="Projections LoRA adapts (method lora), some of "
        + ", ".join(LORA_TARGETS)
        + "; default all",
    )
    book_id: str | None = Field(None, pattern=ID_PATTERN, description="Optional book ID for S3 organization")
    chapter_id: str | None = Field(
        None, pattern=ID_PATTERN, description="Optional chapter ID for S3 organization"
    )
    character_id: str | None = Field(
        None, pattern=ID_PATTERN, description="Optional character ID for local directory organization"
    )
    resume_job_id: str | None = Field(
        None,
        pattern=RESUME_JOB_ID_PATTERN,
        description="A previous job to continue training from; falls back to the base model if not found",
    )
    job_id: str | None = Field(
        None,
        description="Optional client-chosen job id; repeating a call with an active job's id returns that job",
    )
    webhook_url: str | None = Field(
        None,
        max_length=2048,
        description="Called with a signed POST when the job is ready or failed (see docs/chapters.md, Webhooks)",
    )

    @field_validator("speaker_name")
    @classmethod
    def _speaker(cls, value: str) -> str:
        return check_speaker_name(value)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        return check_language(value)

    @field_validator("lora_targets", mode="before")
    @classmethod
    def _lora_targets(cls, value: Any) -> list[str] | None:
        return check_lora_targets(value)

    @field_validator("dataset_s3_key")
    @classmethod
    def _dataset_key(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("dataset_s3_key must not be empty")
        return value

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, value: str | None) -> str | None:
        return None if value is None else check_job_id(value)


class FinetuneConfig(BaseModel):
    num_epochs: int
    batch_size: int
    lr: float
    flash_attn: bool
    method: TrainMethod = "full"


class FinetuneResponse(BaseModel):
    job_id: str
    status: JobStatusName
    speaker_name: str
    config: FinetuneConfig


class Progress(BaseModel):
    stage: str
    epoch: int = 0
    total_epochs: int = 0
    step: int = 0
    loss: float | None = None
    global_step: int = 0

    @model_serializer(mode="wrap")
    def _all_six_fields(self, handler: Any) -> Any:
        """Always the six fields, ``loss`` null before the first step, even under ``exclude_none``."""
        data = handler(self)
        if isinstance(data, dict):
            return {name: data.get(name) for name in type(self).model_fields} | data
        return data


class Job(BaseModel):
    """A fine-tuning job as `GET /jobs/{job_id}` shows it."""

    job_id: str
    status: JobStatusName
    speaker_name: str | None = None
    progress: Progress | None = None
    inference_url: str | None = None
    checkpoint_path: str | None = None
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)
    config: FinetuneConfig | None = None
    dataset_s3_key: str | None = None
    book_id: str | None = None
    chapter_id: str | None = None
    character_id: str | None = None
    resume_job_id: str | None = None
    created_at: float | None = None
    updated_at: float | None = None


# --- inference ---------------------------------------------------------------------------------------------------

MAX_VOICE_STRENGTH = 2.0
VOICE_STRENGTH_HELP = (
    "LoRA voices: the adapter's scale, 0 (the base model's voice from the speaker embedding alone) to 2; "
    "full voices ignore it"
)
# strict: 1.0, "1" or true are not seeds
Seed = Annotated[int, Field(strict=True, ge=0, lt=SEED_LIMIT)]


class InferRequest(BaseModel):
    text: str = Field(description="Text to synthesize")
    language: str = Field("English", max_length=MAX_LANGUAGE_CHARS, description="Language name")
    instruct: str = Field("", max_length=MAX_INSTRUCT_CHARS, description="Style/emotion instruction")
    voice_strength: float = Field(1.0, ge=0, le=MAX_VOICE_STRENGTH, description=VOICE_STRENGTH_HELP)
    seed: Seed | None = Field(None, description=SEED_HELP)
    upload_to_s3: bool | None = Field(
        None,
        description="Upload the result to S3 (the default when storage is configured); false returns the WAV",
    )
    s3_filename: str | None = Field(
        None, max_length=MAX_FILENAME_CHARS, description="Custom filename for the S3 upload"
    )
    book_id: str | None = Field(
        None, pattern=ID_PATTERN, description="Triggers the path audio/segments/{book_id}/"
    )
    chapter_id: str | None = Field(
        None, pattern=ID_PATTERN, description="Used with book_id for the chapter path"
    )
    overwrite: bool = Field(
        True, description="false: answer with an existing object of that name, not regenerate"
    )


class BatchItem(BaseModel):
    text: str | None = None
    filename: str | None = Field(None, max_length=MAX_FILENAME_CHARS)
    language: str | None = Field(None, max_length=MAX_LANGUAGE_CHARS)
    instruct: str | None = Field(None, max_length=MAX_INSTRUCT_CHARS)
    seed: Seed | None = Field(None, description=SEED_HELP)


class BatchInferRequest(BaseModel):
    items: list[BatchItem] = Field(min_length=1, max_length=1000)
    language: str = Field(
        "English", max_length=MAX_LANGUAGE_CHARS, description="Default language for all items"
    )
    instruct: str = Field("", max_length=MAX_INSTRUCT_CHARS, description="Default instruction for all items")
    voice_strength: float = Field(1.0, ge=0, le=MAX_VOICE_STRENGTH, description=VOICE_STRENGTH_HELP)
    book_id: str | None = Field(None, pattern=ID_PATTERN)
    chapter_id: str | None = Field(None, pattern=ID_PATTERN)
    overwrite: bool = True


class InferS3Response(BaseModel):
    s3_url: str
    presigned_url: str
    s3_key: str
    sample_rate: int = SAMPLE_RATE
    text: str
    job_id: str | None = None
    kept_existing: bool = Field(
        False,
        description="true: an object already existed under s3_key and was kept (overwrite: false), so its "
        "audio was not generated from this text",
    )
    note: str | None = Field(None, description="Why the object was kept and how to replace it")


class InlineAudioResponse(BaseModel):
    """A generated WAV returned in the JSON answer (batch endpoints with ``upload_to_s3: false``)."""

    audio_base64: str = Field(description="The 24 kHz 16-bit mono WAV file, base64 encoded")
    media_type: str = "audio/wav"
    sample_rate: int = SAMPLE_RATE
    duration_seconds: float
    text: str
    filename: str | None = None
    job_id: str | None = None


class BatchItemError(BaseModel):
    index: int
    filename: str | None = None
    text: str | None = None
    error: str
    status_code: int = 400


class VoiceDesignRequest(BaseModel):
    text: str
    instruct: str = Field(max_length=MAX_INSTRUCT_CHARS, description="Voice description")
    language: str = Field("English", max_length=MAX_LANGUAGE_CHARS)
    upload_to_s3: bool = Field(False, description="Upload to S3; defaults to true when s3_filename is given")
    s3_filename: str | None = Field(
        None,
        max_length=MAX_FILENAME_CHARS,
        description="Uploaded to audio/design/{description}/{s3_filename}: one folder per voice description "
        "(a digest of language and instruct), so designs of different voices never share an object",
    )
    overwrite: bool = True
    seed: Seed | None = Field(None, description=SEED_HELP)

    @model_validator(mode="before")
    @classmethod
    def _filename_means_upload(cls, data: Any) -> Any:
        # The original service's microservice pattern sends only s3_filename and reads s3_url from the answer.
        if isinstance(data, dict) and data.get("s3_filename") and data.get("upload_to_s3") is None:
            return {**data, "upload_to_s3": True}
        return data


REF_AUDIO_URL_HELP = (
    "Reference audio: an http(s) URL, base64 or a data: URL (size and time limited). URLs resolving to loopback, "
    "private or link-local addresses are refused (400) unless VFT_ALLOW_PRIVATE_URLS=1, or their origin is listed "
    "in VFT_TRUSTED_URL_ORIGINS (e.g. http://127.0.0.1:9000); cloud metadata addresses are always refused"
)


class CloneItem(BaseModel):
    text: str | None = None
    filename: str | None = Field(None, max_length=MAX_FILENAME_CHARS)
    seed: Seed | None = Field(None, description=SEED_HELP)


class VoiceCloneBatchRequest(BaseModel):
    ref_audio_url: str = Field(description=REF_AUDIO_URL_HELP)
    ref_text: str = Field(
        "",
        max_length=MAX_REF_TEXT_CHARS,
        description="Transcript of the reference audio (ICL mode; ignored with use_xvec)",
    )
    items: list[CloneItem] = Field(min_length=1, max_length=1000)
    language: str = Field("English", max_length=MAX_LANGUAGE_CHARS)
    use_xvec: bool = False
    upload_to_s3: bool = Field(
        True,
        description="true: upload each WAV to S3 (audio/clone/{reference id}/{filename}: one folder per "
        "reference voice); false: each WAV comes back "
        f"base64-encoded in its entry (audio_base64), at most {MAX_INLINE_BATCH_ITEMS} items",
    )
    overwrite: bool = False

    @model_validator(mode="after")
    def _inline_answers_are_bounded(self) -> VoiceCloneBatchRequest:
        # Inline WAVs make the whole answer one JSON document held in memory: bound it.
        if not self.upload_to_s3 and len(self.items) > MAX_INLINE_BATCH_ITEMS:
            raise ValueError(
                f"items: at most {MAX_INLINE_BATCH_ITEMS} with upload_to_s3 false (the WAVs come back inline); "
                f"got {len(self.items)}: upload to S3 or split the batch"
            )
        return self


class VoiceCloneRequest(BaseModel):
    ref_audio_url: str = Field(description=REF_AUDIO_URL_HELP)
    ref_text: str = Field("", max_length=MAX_REF_TEXT_CHARS)
    text: str
    language: str = Field("English", max_length=MAX_LANGUAGE_CHARS)
    use_xvec: bool = False
    upload_to_s3: bool | None = None
    s3_filename: str | None = Field(None, max_length=MAX_FILENAME_CHARS)
    overwrite: bool = False
    seed: Seed | None = Field(None, description=SEED_HELP)


# --- service -----------------------------------------------------------------------------------------------------


class Health(BaseModel):
    service: str = SERVICE_NAME
    status: str = "ok"
    storage_configured: bool


class GPUStatus(BaseModel):
    model_loaded: bool
    loaded_checkpoint: str | None
    speaker_name: str | None
    auto_unload_enabled: bool
    idle_timeout_seconds: int
    idle_seconds: float | None
    total_requests: int
    total_loads: int
    total_unloads: int
    gpu_name: str | None
    gpu_memory_total_gb: float | None
    gpu_memory_allocated_gb: float | None
    gpu_memory_reserved_gb: float | None
    gpu_memory_free_gb: float | None
    loaded_models: list[dict[str, Any]] = Field(default_factory=list)
    max_models: int | None = None
    max_adapters: int | None = Field(
        None, description="LoRA voices attached per base model (GPU_MAX_ADAPTERS)"
    )
    engine: str | None = Field(None, description="The decode loop in use (VFT_ENGINE): fast or upstream")


class GPUConfig(BaseModel):
    idle_timeout_seconds: int = Field(300, ge=0, description="Seconds idle before auto-unload; 0 disables")


class StorageStatus(BaseModel):
    configured: bool
    endpoint: str
    bucket: str


class StorageFile(BaseModel):
    key: str
    url: str


class StorageList(BaseModel):
    job_id: str
    count: int
    files: list[StorageFile]


class OpAverage(BaseModel):
    avg_seconds: float
    count: int
