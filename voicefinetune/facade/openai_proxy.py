"""Forwarding the OpenAI-compatible speech endpoint to the inference replica that holds the voice, without buffering.

``POST /v1/audio/speech`` is routed by its body's ``voice`` like ``/infer/{job_id}`` (a fine-tuned voice's job id
reaches the replica the operator preloaded it on); ``design`` and the preset voices use the VoiceDesign model and go
where ``/voice-design`` goes. The answer is relayed chunk by chunk as the replica sends it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..openai_compat import DESIGN_VOICES, error_body

if TYPE_CHECKING:
    from .inference_proxy import InferenceProxy

VOICE_DESIGN_KEY = (
    "voice-design"  # the voices of the VoiceDesign model (DESIGN_VOICES) go where /voice-design goes
)
RELAYED_HEADERS = ("content-type", "content-disposition", "cache-control", "www-authenticate")


def voice_key(body: bytes) -> str:
    """The routing key of a speech request: its voice (the job id of a fine-tuned voice), or the VoiceDesign key."""
    try:
        voice = json.loads(body or b"{}").get("voice")
    except (ValueError, AttributeError):
        voice = None
    if isinstance(voice, dict):  # OpenAI's {"id": ...} form
        voice = voice.get("id")
    if not isinstance(voice, str) or not voice.strip():
        return ""
    voice = voice.strip()
    return VOICE_DESIGN_KEY if voice.lower() in DESIGN_VOICES else voice


async def forward_speech(
    proxy: InferenceProxy, request: Request, forwarded: tuple[str, ...]
) -> StreamingResponse:
    """Send the request to the voice's replica (the next ones in rendezvous order if it cannot be reached) and relay
    the answer's bytes as they arrive."""
    body = await request.body()
    headers = {name: value for name, value in request.headers.items() if name.lower() in forwarded}
    headers.update(proxy.auth)
    client = proxy._client()
    errors = []
    try:
        replicas = await proxy.replicas(voice_key(body))
    except HTTPException as exc:
        return _error(exc.status_code, str(exc.detail))
    for replica in replicas:
        outgoing = client.build_request(
            request.method,
            f"{replica}{request.url.path}",
            params=request.query_params,
            content=body,
            headers=headers,
        )
        try:
            answer = await client.send(outgoing, stream=True)
        except (
            httpx.TransportError
        ) as exc:  # the replica went away: the next one in rendezvous order takes it
            errors.append(f"{replica}: {exc!r}")
            continue
        returned = {name: value for name, value in answer.headers.items() if name.lower() in RELAYED_HEADERS}
        return StreamingResponse(
            _relay(answer),
            status_code=answer.status_code,
            headers={**returned, "X-VFT-Replica": replica, "X-Accel-Buffering": "no"},
        )
    return _error(503, f"the inference service is unreachable: {'; '.join(errors)}")


async def _relay(answer: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in answer.aiter_raw():
            yield chunk
    finally:
        await answer.aclose()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_body(message, status=status))
