"""Extension of ``POST /v1/audio/speech``: voice ``clone`` speaks with the Base model in the voice of a reference
recording, given in /voice-clone's fields (``ref_audio_url``, ``ref_text``, ``use_xvec``) and checked as /voice-clone
checks them; errors in OpenAI's shape name the field. One clone prompt per reference (`engine.clone_prompts`), shared by its sentences."""

from __future__ import annotations

from voicefinetune.openai_compat import CLONE_VOICE
from voicefinetune.schemas import InvalidInput
from voicefinetune_inference.errors import RefAudioError
from voicefinetune_inference.openai_api.protocol import OpenAIError, SpeechRequest
from voicefinetune_inference.openai_api.voices import ResolvedVoice
from voicefinetune_inference.serving.cloning import VoiceCloner, check_ref_text

REFERENCE_FIELDS = ("ref_audio_url", "ref_text", "use_xvec")


def wants_clone(body: SpeechRequest) -> bool:
    """Whether ``body`` asks for a clone voice; reference fields beside any other voice are a 400."""
    if body.voice_name.lower() == CLONE_VOICE:
        return True
    given = [name for name in REFERENCE_FIELDS if name in body.model_fields_set]
    if given:
        raise OpenAIError(
            400, f"{given[0]} is only used with voice {CLONE_VOICE!r}", param=given[0], code="invalid_value"
        )
    return False


async def clone_voice(body: SpeechRequest, cloner: VoiceCloner) -> ResolvedVoice:
    if not body.ref_audio_url:
        raise OpenAIError(
            400,
            f"voice {CLONE_VOICE!r} needs ref_audio_url (the reference audio: a URL, base64 or a data: URL)",
            param="ref_audio_url",
            code="missing_required_parameter",
        )
    try:
        check_ref_text(body.ref_text, body.use_xvec)
    except InvalidInput as exc:
        raise OpenAIError(400, str(exc), param="ref_text", code="missing_required_parameter") from exc
    try:
        waveform, rate = await cloner.reference_audio(body.ref_audio_url)
        spec, prompt = await cloner.clone_prompt(
            waveform, rate=rate, ref_text=body.ref_text, use_xvec=body.use_xvec
        )
    except RefAudioError as exc:
        raise OpenAIError(400, str(exc), param="ref_audio_url", code="invalid_value") from exc
    return ResolvedVoice(spec, None, None, "", {"clone_prompt": prompt})
