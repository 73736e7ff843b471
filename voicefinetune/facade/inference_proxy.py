"""The inference endpoints on a cluster, forwarded to the inference replicas.

A voice always goes to the same replica: rendezvous hashing of the job_id over the replicas the inference
Service's name resolves to (``voicefinetune.cluster.routing``; the operator preloads the voice on that same
replica). Voice design and voice clone are keyed by their model, so each of those models stays warm on one replica
too. ``ROUTES`` is the inference server's route table as seen from here (a test keeps the two equal).
"""

from __future__ import annotations

import asyncio

import httpx
from fastapi import APIRouter, HTTPException, Request, Response

from ..cluster.routing import EndpointResolver, rendezvous_order
from ..lifecycle import JobGate
from ..metrics import exposition
from ..security import auth_headers
from ..settings import Settings
from .openai_proxy import forward_speech

PROXY_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
FORWARDED_HEADERS = ("content-type", "accept")
RETURNED_HEADERS = ("content-type", "content-disposition")
# (method, path, routing): a voice key routes to one replica ("{job_id}" = the path's job), "*" goes to every
# replica (GPU settings apply to all), "" to the first replica.
ROUTES: list[tuple[str, str, str]] = [
    ("POST", "/infer/{job_id}", "{job_id}"),
    ("POST", "/infer/{job_id}/batch", "{job_id}"),
    ("POST", "/voice-design", "voice-design"),
    ("POST", "/voice-clone", "voice-clone"),
    ("POST", "/voice-clone/batch", "voice-clone"),
    ("GET", "/gpu/status", ""),
    ("POST", "/gpu/unload", "*"),
    ("PUT", "/gpu/config", "*"),
    ("GET", "/gpu/cleanup", "*"),
    ("GET", "/storage/status", ""),
    ("GET", "/storage/list/{job_id}", ""),
    ("GET", "/ops/averages", ""),
    ("GET", "/ops/history", ""),
    ("GET", "/ops/running", ""),
    ("POST", "/v1/audio/speech", "{voice}"),  # streamed through, routed by the body's voice (openai_proxy)
    ("GET", "/v1/models", ""),
    ("GET", "/v1/models/{model_id:path}", ""),
    ("GET", "/v1/audio/voices", ""),
]


class InferenceProxy:
    def __init__(self, settings: Settings):
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

    async def replicas(self, key: str) -> list[str]:
        """Replicas to try for ``key``, the owner first (the next ones only if it cannot be reached)."""
        endpoints = await self.resolver.endpoints()
        if not endpoints:
            raise HTTPException(503, "the inference service has no ready replica")
        return rendezvous_order(key, endpoints) if key and key != "*" else sorted(endpoints)

    async def forward(self, request: Request, key: str) -> Response:
        body = await request.body()
        headers = {
            name: value for name, value in request.headers.items() if name.lower() in FORWARDED_HEADERS
        }
        headers.update(self.auth)
        replicas = await self.replicas(key)
        if key == "*":  # every replica: a failure anywhere is the caller's answer
            answers = await asyncio.gather(
                *(self._send(r, request, body, headers) for r in replicas), return_exceptions=True
            )
            lost = [
                f"{r}: {a!r}" for r, a in zip(replicas, answers, strict=True) if isinstance(a, BaseException)
            ]
            if lost:
                raise HTTPException(503, f"inference replicas unreachable: {'; '.join(lost)}")
            return next((a for a in answers if a.status_code >= 400), answers[0])
        errors = []
        for replica in replicas:
            try:
                return await self._send(replica, request, body, headers)
            except (
                httpx.TransportError
            ) as exc:  # the replica went away: the next one in rendezvous order takes it
                errors.append(f"{replica}: {exc!r}")
        raise HTTPException(503, f"the inference service is unreachable: {'; '.join(errors)}")

    async def _send(self, replica: str, request: Request, body: bytes, headers: dict[str, str]) -> Response:
        answer = await self._client().request(
            request.method,
            f"{replica}{request.url.path}",
            params=request.query_params,
            content=body,
            headers=headers,
        )
        returned = {name: value for name, value in answer.headers.items() if name.lower() in RETURNED_HEADERS}
        return Response(
            content=answer.content,
            status_code=answer.status_code,
            headers={**returned, "X-VFT-Replica": replica},
        )


def inference_proxy_router(settings: Settings, job_gate: JobGate) -> APIRouter:
    """The inference endpoints, forwarded to the inference replicas; ``/infer/{job_id}*`` first passes
    ``job_gate`` (404 unknown job, 409 not ready)."""
    proxy = InferenceProxy(settings)
    router = APIRouter()

    def add(method: str, path: str, routing: str) -> None:
        async def endpoint(request: Request) -> Response:
            job_id = request.path_params.get("job_id")
            if path.startswith("/infer/"):
                await job_gate(job_id)
            key = job_id if routing == "{job_id}" else routing
            if routing == "{voice}":
                return await forward_speech(proxy, request, FORWARDED_HEADERS)
            return await proxy.forward(request, key)

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
