"""The bodies of the OpenAI-compatible audio API (`/v1/audio/speech`, `/v1/models`, `/v1/audio/voices`) and its
error shape ``{"error": {"message", "type", "param", "code"}}``, after OpenAI's API reference."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from voicefinetune.openai_compat import PRESET_VOICES, error_body
from voicefinetune.schemas import (
    MAX_REF_TEXT_CHARS,
    MAX_VOICE_STRENGTH,
    REF_AUDIO_URL_HELP,
    VOICE_STRENGTH_HELP,
    Seed,
)
from voicefinetune_inference.audio.time_stretch import MAX_SPEED, MIN_SPEED

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
StreamFormat = Literal["audio", "sse"]
MAX_INPUT_CHARS = 4096  # OpenAI's limit; VFT_MAX_TEXT_CHARS applies per sentence


class VoiceId(BaseModel):
    id: str


class SpeechRequest(BaseModel):
    model: str = Field(description="Any id of GET /v1/models, e.g. qwen3-tts")
    input: str = Field(
        description="The text to say (at most 4096 characters); long inputs stream sentence by sentence"
    )
    voice: str | VoiceId = Field(
        description="A ready fine-tuned voice (its job id or speaker name), 'design' (the VoiceDesign model: describe "
        "the voice in `instructions`), a preset voice (" + ", ".join(PRESET_VOICES) + ": stock voice "
        "descriptions for the VoiceDesign model) or, an extension, 'clone' (the Base model in the voice of "
        '`ref_audio_url`, as /voice-clone), as a string or as {"id": ...}. GET /v1/audio/voices lists them.'
    )
    response_format: ResponseFormat = Field("mp3", description="pcm = raw 16-bit little-endian mono 24 kHz")
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED, description="Pitch-preserving tempo, 0.25-4.0")
    instructions: str | None = Field(
        None, description="Speaking style (the model's `instruct`); for 'design' the description of the voice"
    )
    stream_format: StreamFormat = Field(
        "audio", description="audio: the file's bytes as they are encoded; sse: speech.audio.delta events"
    )
    language: str | None = Field(None, description="Extension: the language (default English; see /infer)")
    voice_strength: float = Field(
        1.0, ge=0, le=MAX_VOICE_STRENGTH, description="Extension: " + VOICE_STRENGTH_HELP
    )
    seed: Seed | None = Field(
        None,
        description="Extension: fixes the sampling (0 to 2^63-1); sentence i of the input draws from a seed derived "
        "from this one and i (voicefinetune/seeds.py), so the same seed, input, voice and settings give the same "
        "audio; none: each sentence's seed follows from the voice's model and what is said",
    )
    # Extension, voice 'clone': /voice-clone's reference fields, under the same names and limits
    ref_audio_url: str | None = Field(
        None, description="Extension, with voice 'clone': " + REF_AUDIO_URL_HELP
    )
    ref_text: str = Field(
        "",
        max_length=MAX_REF_TEXT_CHARS,
        description="Extension, with voice 'clone': the transcript of the reference audio (ignored with use_xvec)",
    )
    use_xvec: bool = Field(
        False,
        description="Extension, with voice 'clone': clone from the speaker embedding alone (no ref_text)",
    )

    @property
    def voice_name(self) -> str:
        return self.voice if isinstance(self.voice, str) else self.voice.id

    model_config = {
        "extra": "ignore",
        "json_schema_extra": {
            "examples": [
                {
                    "model": "qwen3-tts",
                    "input": "Hello there. This is my fine-tuned voice.",
                    "voice": "hero1",
                    "response_format": "mp3",
                }
            ]
        },
    }


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "voicefinetune"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class VoiceCard(BaseModel):
    id: str = Field(description="What to pass as `voice`")
    name: str
    type: Literal["fine-tuned", "designed", "preset", "cloned"]
    speaker_name: str | None = None
    description: str | None = None


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceCard]


class OpenAIError(Exception):
    """An error answered in OpenAI's shape with ``status``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, status=self.status, param=self.param, code=self.code)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {
            "application/json": {
                "example": {"error": {"message": "...", "type": kind, "param": None, "code": None}}
            }
        },
    }
    for status, description, kind in (
        (400, "Invalid request (e.g. empty input, an unknown or ambiguous voice)", "invalid_request_error"),
        (401, "Missing or wrong API key (when VFT_API_KEY is set)", "authentication_error"),
        (404, "Unknown model", "invalid_request_error"),
        (409, "The voice is registered but not servable now", "invalid_request_error"),
    )
}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its nested definitions written in place (for ``openapi_extra``, where a
    ``$ref`` would point into the whole OpenAPI document)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)
