"""The inference endpoints on a cluster, forwarded to the inference replicas.

A voice always goes to the same replica: rendezvous hashing of its key over the replicas the inference Service's
name resolves to (``voicefinetune.cluster.routing``; the operator preloads the voice on that same replica). A full
voice's key is its job id; a LoRA voice's is its base model and book, as the operator recorded it in the
resource's status (``voice_keys`` reads it), so a book's LoRA voices share the replica that holds their base. When
that replica cannot be reached, the next one in rendezvous order takes the request. Voice design and voice clone
are keyed by their model, so each of those models stays warm on one replica too. ``POST /v1/audio/speech`` is
routed by its body's ``voice`` like ``/infer/{job_id}`` (a fine-tuned voice's job id), its designed voices go where
``/voice-design`` goes, and its answer is relayed chunk by chunk as the replica sends it. ``ROUTES`` is the
inference server's route table as seen from here (a test keeps the two equal).
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from ..cluster.routing import EndpointResolver, rendezvous_order
from ..lifecycle import JobGate
from ..metrics import exposition
from ..openai_compat import CLONE_VOICE, DESIGN_VOICES
from ..security import auth_headers
from ..settings import Settings

PROXY_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
FORWARDED_HEADERS = ("content-type", "accept")
RETURNED_HEADERS = ("content-type", "content-disposition")
STREAMED_HEADERS = (*RETURNED_HEADERS, "cache-control", "www-authenticate")

# A voice id -> its rendezvous key (the Kubernetes backend reads the key the operator recorded).
VoiceKeys = Callable[[str], Awaitable[str]]


class Routing(enum.Enum):
    """Which replica a forwarded request goes to."""

    JOB = enum.auto()  # the voice of the path's job id (after the job gate)
    SPEECH_VOICE = enum.auto()  # the voice in the body (`speech_key`); the answer streamed through
    CHAPTER = enum.auto()  # a chapter's first voice (`chapter_key`): its work runs where that voice is
    VOICE_DESIGN = enum.auto()  # the VoiceDesign model's replica
    VOICE_CLONE = enum.auto()  # the Base model's replica
    EVERY = enum.auto()  # every replica at once (GPU settings apply to all); a failure anywhere is the answer
    FIRST = enum.auto()  # the first replica that can be reached


MODEL_KEYS = {Routing.VOICE_DESIGN: "voice-design", Routing.VOICE_CLONE: "voice-clone"}
VOICE_ROUTINGS = (Routing.JOB, Routing.SPEECH_VOICE, Routing.CHAPTER)  # keyed by a voice (`VoiceKeys`)
ROUTES: list[tuple[str, str, Routing]] = [
    ("POST", "/infer/{job_id}", Routing.JOB),
    ("POST", "/infer/{job_id}/batch", Routing.JOB),
    ("POST", "/voice-design", Routing.VOICE_DESIGN),
    ("POST", "/voice-clone", Routing.VOICE_CLONE),
    ("POST", "/voice-clone/batch", Routing.VOICE_CLONE),
    ("GET", "/gpu/status", Routing.FIRST),
    ("POST", "/gpu/unload", Routing.EVERY),
    ("PUT", "/gpu/config", Routing.EVERY),
    ("GET", "/gpu/cleanup", Routing.EVERY),
    ("GET", "/storage/status", Routing.FIRST),
    ("GET", "/storage/list/{job_id}", Routing.FIRST),
    ("GET", "/ops/averages", Routing.FIRST),
    ("GET", "/ops/history", Routing.FIRST),
    ("GET", "/ops/running", Routing.FIRST),
    ("POST", "/v1/audio/speech", Routing.SPEECH_VOICE),
    ("GET", "/v1/models", Routing.FIRST),
    ("GET", "/v1/models/{model_id:path}", Routing.FIRST),
    ("GET", "/v1/audio/voices", Routing.FIRST),
    # A chapter's state is in S3: any replica answers for it (and a cancel reaches its worker through S3).
    ("POST", "/synthesis", Routing.CHAPTER),
    ("GET", "/synthesis", Routing.FIRST),
    ("GET", "/synthesis/{synthesis_id}", Routing.FIRST),
    ("DELETE", "/synthesis/{synthesis_id}", Routing.FIRST),
    ("POST", "/synthesis/{synthesis_id}/segments/{index}/regenerate", Routing.FIRST),
]


def _body(body: bytes) -> dict:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _voice_key(voice: object) -> str | None:
    if not isinstance(voice, str) or not voice.strip():
        return None
    voice = voice.strip()
    if voice.lower() == CLONE_VOICE:  # the Base model, in the voice of the body's reference
        return MODEL_KEYS[Routing.VOICE_CLONE]
    designed = voice.lower() in DESIGN_VOICES or voice.lower().startswith("design:")
    return MODEL_KEYS[Routing.VOICE_DESIGN] if designed else voice


def speech_key(body: bytes) -> str | None:
    """The routing key of a speech request: its voice (the job id of a fine-tuned voice), or the VoiceDesign
    model's key for the voices that model speaks, the Base model's for ``clone``; None without a voice."""
    voice = _body(body).get("voice")
    if isinstance(voice, dict):  # OpenAI's {"id": ...} form
        voice = voice.get("id")
    return _voice_key(voice)


def chapter_key(body: bytes) -> str | None:
    """The routing key of a chapter: its ``voice``, else its first item's (keyed like a speech request's)."""
    parsed = _body(body)
    voice = parsed.get("voice")
    items = parsed.get("items")
    if not voice and isinstance(items, list) and items and isinstance(items[0], dict):
        voice = items[0].get("voice")
    return _voice_key(voice)


def routing_key(routing: Routing, request: Request, body: bytes) -> str | None:
    """The rendezvous key of a request; None: the replicas in their sorted order."""
    if routing is Routing.JOB:
        return request.path_params["job_id"]
    if routing is Routing.SPEECH_VOICE:
        return speech_key(body)
    if routing is Routing.CHAPTER:
        return chapter_key(body)
    return MODEL_KEYS.get(routing)


async def own_key(voice: str) -> str:
    """Without a record of voices (no cluster to ask), each voice is keyed by its id."""
    return voice


class InferenceProxy:
    def __init__(self, settings: Settings, voice_keys: VoiceKeys = own_key):
        self.voice_keys = voice_keys
        self.resolver = EndpointResolver(
            settings.inference_url
            or f"http://voicefinetune-inference.{settings.namespace}.svc.cluster.local:8000"
        )
        self._clients: dict[int, httpx.AsyncClient] = {}
        self.auth = auth_headers(
            settings
        )  # the inference Service shares the facade's key (the chart's Secret)

    def _client(self) -> httpx.AsyncClient:
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None or client.is_closed:
            client = self._clients[loop_id] = httpx.AsyncClient(timeout=PROXY_TIMEOUT)
        return client

    async def replicas(self, key: str | None) -> list[str]:
        """Replicas to try for ``key``, the owner first (the next ones only if it cannot be reached)."""
        endpoints = await self.resolver.endpoints()
        if not endpoints:
            raise HTTPException(503, "the inference service has no ready replica")
        return rendezvous_order(key, endpoints) if key else sorted(endpoints)

    async def forward(self, request: Request, routing: Routing) -> Response:
        body = await request.body()
        headers = {
            name: value for name, value in request.headers.items() if name.lower() in FORWARDED_HEADERS
        }
        headers.update(self.auth)
        key = routing_key(routing, request, body)
        if routing in VOICE_ROUTINGS and key is not None and key not in MODEL_KEYS.values():
            key = await self.voice_keys(key)
        replicas = await self.replicas(key)
        if routing is Routing.EVERY:
            answers = await asyncio.gather(
                *(self._send(r, request, body, headers) for r in replicas), return_exceptions=True
            )
            lost = [
                f"{r}: {a!r}" for r, a in zip(replicas, answers, strict=True) if isinstance(a, BaseException)
            ]
            if lost:
                raise HTTPException(503, f"inference replicas unreachable: {'; '.join(lost)}")
            sent = [a for a in answers if not isinstance(a, BaseException)]
            return next((a for a in sent if a.status_code >= 400), sent[0])
        errors = []
        for replica in replicas:
            try:
                return await self._send(
                    replica, request, body, headers, streamed=routing is Routing.SPEECH_VOICE
                )
            except httpx.TransportError as exc:  # the replica went away: the next one in order takes it
                errors.append(f"{replica}: {exc!r}")
        raise HTTPException(503, f"the inference service is unreachable: {'; '.join(errors)}")

    async def _send(
        self, replica: str, request: Request, body: bytes, headers: dict[str, str], *, streamed: bool = False
    ) -> Response:
        client = self._client()
        outgoing = client.build_request(
            request.method,
            f"{replica}{request.url.path}",
            params=request.query_params,
            content=body,
            headers=headers,
        )
        answer = await client.send(outgoing, stream=streamed)
        kept = STREAMED_HEADERS if streamed else RETURNED_HEADERS
        returned = {name: value for name, value in answer.headers.items() if name.lower() in kept}
        if streamed:
            return StreamingResponse(
                _relay(answer),
                status_code=answer.status_code,
                headers={**returned, "X-VFT-Replica": replica, "X-Accel-Buffering": "no"},
            )
        return Response(
            content=answer.content,
            status_code=answer.status_code,
            headers={**returned, "X-VFT-Replica": replica},
        )


async def _relay(answer: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in answer.aiter_raw():
            yield chunk
    finally:
        await answer.aclose()


def inference_proxy_router(
    settings: Settings, job_gate: JobGate, voice_keys: VoiceKeys = own_key
) -> APIRouter:
    """The inference endpoints, forwarded to the inference replicas; ``/infer/{job_id}*`` first passes
    ``job_gate`` (404 unknown job, 409 not ready); ``voice_keys`` gives a voice's rendezvous key."""
    proxy = InferenceProxy(settings, voice_keys)
    router = APIRouter()

    def add(method: str, path: str, routing: Routing) -> None:
        async def endpoint(request: Request) -> Response:
            if routing is Routing.JOB:
                await job_gate(request.path_params["job_id"])
            return await proxy.forward(request, routing)

        tag = path.strip("/").split("/")[0]
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            tags=[tag],
            summary=f"{method} {path} (forwarded)",
            name=f"proxy_{method.lower()}_{path}",
        )

    for method, path, routing in ROUTES:
        add(method, path, routing)

    @router.get("/metrics", tags=["ops"], summary="Prometheus metrics of the facade")
    async def metrics() -> Response:
        body, content_type = exposition()
        return Response(content=body, media_type=content_type)

    return router
