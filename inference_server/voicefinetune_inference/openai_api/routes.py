"""The OpenAI-compatible audio API: ``POST /v1/audio/speech`` (streamed), ``GET /v1/models``, ``GET /v1/audio/voices``.

Speech streams with chunked transfer encoding: the first bytes leave once the first chunk of the first sentence is
encoded. Errors are answered in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``; an error found
before the first audio (unknown voice, empty input, a model that does not load) gets its own status, one after it
ends the stream early.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from voicefinetune.lifecycle import JobGate
from voicefinetune.seeds import derived_seed
from voicefinetune_inference.audio.encoding import media_type
from voicefinetune_inference.audio.sentences import split_sentences
from voicefinetune_inference.errors import message_for, status_for
from voicefinetune_inference.openai_api.clone_voice import clone_voice, wants_clone
from voicefinetune_inference.openai_api.protocol import (
    ERROR_RESPONSES,
    MAX_INPUT_CHARS,
    ModelCard,
    ModelList,
    OpenAIError,
    SpeechRequest,
    VoiceList,
    inline_schema,
)
from voicefinetune_inference.openai_api.streaming import SpeechStreamer, StreamRequest
from voicefinetune_inference.openai_api.voices import OpenAIVoices, UnknownVoice, request_language

if TYPE_CHECKING:
    from voicefinetune_inference.serving.service import InferenceService

log = logging.getLogger(__name__)
SPEECH_HELP = """OpenAI's `audio.speech.create`. The audio streams as it is generated (chunked transfer encoding):
long inputs are split into sentences and the next sentence generates while the current one is sent.
`stream_format: sse` sends `speech.audio.delta` events (base64 of the chosen format's bytes) and a final
`speech.audio.done`. `language` is an extension (default English); so is voice `clone`, the Base model in the
voice of `ref_audio_url` (with `ref_text`, or `use_xvec`), the fields of /voice-clone."""
# Pydantic's error types as OpenAI's error codes (any other invalid value is `invalid_value`).
VALIDATION_CODES = {
    "missing": "missing_required_parameter",
    "less_than_equal": "decimal_above_max_value",
    "less_than": "decimal_above_max_value",
    "greater_than_equal": "decimal_below_min_value",
    "string_type": "invalid_type",
    "float_type": "invalid_type",
    "float_parsing": "invalid_type",
    "int_type": "invalid_type",
    "model_type": "invalid_type",
}


def error_response(error: OpenAIError) -> JSONResponse:
    return JSONResponse(status_code=error.status, content=error.body())


def as_openai_error(exc: Exception) -> OpenAIError:
    if isinstance(exc, OpenAIError):
        return exc
    status = status_for(exc)
    if status >= 500:
        log.exception("speech request failed")
    return OpenAIError(status, message_for(exc))


def parse_speech(raw: bytes) -> SpeechRequest:
    try:
        return SpeechRequest.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first.get("loc", ())) or None
        if first.get("type") == "json_invalid":
            raise OpenAIError(400, "the request body is not valid JSON") from exc
        raise OpenAIError(
            400,
            f"{param}: {first.get('msg', 'invalid value')}",
            param=param,
            code=VALIDATION_CODES.get(first.get("type", ""), "invalid_value"),
        ) from exc


async def _chain(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    try:
        if first:
            yield first
        async for data in rest:
            yield data
    finally:
        await rest.aclose()


async def not_ready_error(job_gate: JobGate | None, voice: str) -> OpenAIError | None:
    """409 for a voice that names a job still training (``job_gate``, the facade's on one machine), else None."""
    if job_gate is None:
        return None
    try:
        await job_gate(voice)
    except HTTPException as exc:
        if exc.status_code == 409:
            return OpenAIError(409, str(exc.detail), param="voice", code="voice_not_ready")
    except Exception:  # noqa: BLE001 - not a job: the voice stays unknown
        return None
    return None


def add_openai_routes(
    router: APIRouter, service: InferenceService, *, job_gate: JobGate | None = None
) -> None:
    """Add the /v1 endpoints to ``router`` (added, not included, so they keep the router's route class and show
    as plain routes in its table). ``job_gate`` turns an unknown voice that names a job not ready yet into a 409."""
    settings = service.settings
    voices = OpenAIVoices(settings, service.catalog, service.speech.loader)
    streamer = SpeechStreamer(service.generator.stream, activity=service.activity, opslog=service.opslog)
    schema = inline_schema(SpeechRequest)

    @router.post(
        "/v1/audio/speech",
        tags=["openai"],
        summary="Generate speech (OpenAI-compatible, streamed)",
        description=SPEECH_HELP,
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {
                    "audio/mpeg": {},
                    "audio/wav": {},
                    "audio/ogg": {},
                    "audio/flac": {},
                    "audio/aac": {},
                    "audio/pcm": {},
                    "text/event-stream": {},
                },
                "description": "The audio, streamed",
            },
            **ERROR_RESPONSES,
        },
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}
        },
    )
    async def speech(request: Request):
        started = time.monotonic()
        try:
            body = parse_speech(await request.body())
            voices.model(body.model)
            if not body.input.strip():
                raise OpenAIError(400, "input must not be empty", param="input")
            if len(body.input) > MAX_INPUT_CHARS:
                raise OpenAIError(
                    400,
                    f"input is {len(body.input)} characters long; the limit is {MAX_INPUT_CHARS}",
                    param="input",
                    code="string_above_max_length",
                )
            language = request_language(body.language)
            if wants_clone(body):
                voice = await clone_voice(body, service.cloner)
            else:
                voice = await voices.resolve(body.voice_name, body.instructions, body.voice_strength)
            sentences = split_sentences(body.input, max_chars=min(settings.max_text_chars, 400))
            plan = StreamRequest(
                spec=voice.spec,
                items=[
                    voice.item(text, language, derived_seed(body.seed, index))
                    for index, text in enumerate(sentences)
                ],
                response_format=body.response_format,
                speed=body.speed,
                voice=body.voice_name,
                job_id=voice.job_id,
            )
            stream = streamer.respond(plan, stream_format=body.stream_format, started=started)
            first = await anext(stream, b"")
        except Exception as exc:  # noqa: BLE001 - every error is answered in OpenAI's shape
            error = as_openai_error(exc)
            if isinstance(error, UnknownVoice):
                error = await not_ready_error(job_gate, body.voice_name) or error
            return error_response(error)
        sse = body.stream_format == "sse"
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if not sse:
            headers["Content-Disposition"] = f'inline; filename="speech.{body.response_format}"'
        return StreamingResponse(
            _chain(first, stream),
            media_type="text/event-stream" if sse else media_type(body.response_format),
            headers=headers,
        )

    @router.get(
        "/v1/models", tags=["openai"], response_model=ModelList, summary="Model ids for /v1/audio/speech"
    )
    async def models() -> ModelList:
        return ModelList(data=voices.models())

    @router.get(
        "/v1/models/{model_id:path}",
        tags=["openai"],
        response_model=ModelCard,
        summary="One model id of GET /v1/models",
        responses={404: ERROR_RESPONSES[404]},
    )
    async def model(model_id: str, request: Request):
        # Starlette's route pattern ends in `$`, which matches before a final newline (dropped from a :path
        # parameter): the id is the whole rest of the path.
        model_id = request.scope["path"].partition("/v1/models/")[2]
        try:
            return voices.model(model_id)
        except OpenAIError as error:
            return error_response(error)

    @router.get(
        "/v1/audio/voices",
        tags=["openai"],
        response_model=VoiceList,
        summary="Voices for /v1/audio/speech: fine-tuned, designed and preset",
    )
    async def voice_list() -> VoiceList:
        return VoiceList(data=voices.cards())
