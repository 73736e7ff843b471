"""What the OpenAI-compatible API can speak with: its model ids and voices, and turning a request's ``voice`` into
the model to load and the utterances to generate.

Voices: a registered fine-tuned voice (by job id, or by its speaker name), ``design`` (the VoiceDesign model; the
request's ``instructions`` describe the voice) and OpenAI's preset names, each a stock description for the
VoiceDesign model (so clients that default to ``alloy`` get a consistent voice). ``clone`` is listed here and
resolved by `clone_voice` (it needs the request's reference fields).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voicefinetune.input_echo import short_repr
from voicefinetune.openai_compat import CLONE_VOICE, DESIGN_VOICE, PRESET_VOICES
from voicefinetune.schemas import InvalidInput, check_language
from voicefinetune.settings import Settings
from voicefinetune_inference.caches.model_cache import ModelSpec
from voicefinetune_inference.caches.model_loading import ModelLoader
from voicefinetune_inference.caches.voices import VoiceCatalog
from voicefinetune_inference.engine import tts_model
from voicefinetune_inference.errors import VoiceNotFound
from voicefinetune_inference.openai_api.protocol import ModelCard, OpenAIError, VoiceCard

OWN_MODEL_IDS = ("qwen3-tts", "qwen3-tts-custom-voice", "qwen3-tts-voice-design")
# Accepted so OpenAI clients work unchanged; they mean the same as qwen3-tts.
OPENAI_MODEL_IDS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")


class UnknownVoice(OpenAIError):
    """A voice that is none of the above (the API answers 409 instead where it names a job still training)."""


@dataclass(frozen=True)
class ResolvedVoice:
    spec: ModelSpec
    job_id: str | None
    speaker: str | None
    instruct: str
    extra: dict[str, Any] = field(default_factory=dict)  # a fine-tuned voice's SpeechItem fields (`target`)

    def item(self, text: str, language: str, seed: int | None = None) -> tts_model.SpeechItem:
        if self.extra:
            return tts_model.SpeechItem(text, language, self.instruct, **self.extra, seed=seed)
        return tts_model.SpeechItem(text, language, self.instruct, speaker=self.speaker, seed=seed)


class OpenAIVoices:
    def __init__(self, settings: Settings, catalog: VoiceCatalog, loader: ModelLoader):
        self.settings = settings
        self.catalog = catalog
        self.loader = loader

    def model_ids(self) -> list[str]:
        ids = [*OWN_MODEL_IDS, self.settings.base_model, self.settings.voice_design_model, *OPENAI_MODEL_IDS]
        return list(dict.fromkeys(ids))

    def models(self) -> list[ModelCard]:
        return [ModelCard(id=model_id) for model_id in self.model_ids()]

    def model(self, model: str) -> ModelCard:
        if model not in self.model_ids():
            raise OpenAIError(
                404,
                f"The model {short_repr(model)} does not exist; GET /v1/models lists the ids",
                param="model",
                code="model_not_found",
            )
        return ModelCard(id=model)

    def cards(self) -> list[VoiceCard]:
        tuned = [
            VoiceCard(
                id=voice["job_id"],
                name=voice["speaker_name"],
                type="fine-tuned",
                speaker_name=voice["speaker_name"],
            )
            for voice in self.catalog.all()
        ]
        designed = [
            VoiceCard(
                id=DESIGN_VOICE,
                name="Voice design",
                type="designed",
                description="The VoiceDesign model: describe the voice in `instructions`",
            )
        ]
        cloned = [
            VoiceCard(
                id=CLONE_VOICE,
                name="Voice clone",
                type="cloned",
                description="The Base model in the voice of a reference recording: `ref_audio_url` and `ref_text` "
                "(extension fields, as /voice-clone)",
            )
        ]
        presets = [
            VoiceCard(id=name, name=name, type="preset", description=text)
            for name, text in PRESET_VOICES.items()
        ]
        return tuned + designed + cloned + presets

    async def resolve(self, voice: str, instructions: str | None, strength: float = 1.0) -> ResolvedVoice:
        tuned = self._fine_tuned(voice)
        if tuned is not None:
            self.catalog.touch(tuned.job_id)
            spec, extra = await self.catalog.target(tuned, strength)
            return ResolvedVoice(spec, tuned.job_id, tuned.speaker_name, instructions or "", extra)
        lowered = voice.lower()
        if lowered == DESIGN_VOICE:
            if not instructions or not instructions.strip():
                raise OpenAIError(
                    400, "voice 'design' needs `instructions` describing the voice", param="instructions"
                )
            return ResolvedVoice(await self.loader.shared_spec("voice_design"), None, None, instructions)
        if lowered in PRESET_VOICES:
            description = PRESET_VOICES[lowered] + (f" {instructions.strip()}" if instructions else "")
            return ResolvedVoice(await self.loader.shared_spec("voice_design"), None, None, description)
        raise UnknownVoice(
            400,
            f"Invalid value: voice {short_repr(voice)} is neither a ready fine-tuned voice (job id or "
            "speaker name), 'design', nor a preset; GET /v1/audio/voices lists them",
            param="voice",
            code="invalid_value",
        )

    def _fine_tuned(self, name: str):
        try:
            return self.catalog.get(name)
        except VoiceNotFound:
            pass
        except InvalidInput:
            return None
        matches = [v for v in self.catalog.registry.all() if v.speaker_name.lower() == name.lower()]
        if len(matches) > 1:
            job_ids = ", ".join(sorted(repr(v.job_id) for v in matches))
            raise OpenAIError(
                400,
                f"voice {name!r} is the speaker name of {len(matches)} voices: pass one of their "
                f"job ids instead ({job_ids})",
                param="voice",
                code="invalid_value",
            )
        return matches[0] if matches else None


def request_language(language: str | None) -> str:
    try:
        return check_language(language)
    except InvalidInput as exc:
        raise OpenAIError(400, str(exc), param="language") from exc
