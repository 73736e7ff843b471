"""The operator's calls to the inference replicas: register (and preload) a trained voice, unregister it.

Every replica gets the registration, so any of them can serve the voice if the replicas change; only the one that
rendezvous hashing assigns the voice's key to (where the facade sends its requests) preloads it: a full voice's key
is its id, a LoRA voice's its base model and book (``placement``), and preloading a LoRA voice attaches its adapter.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from voicefinetune.cluster.routing import EndpointResolver, rendezvous_order

log = logging.getLogger(__name__)


class VoiceRejected(RuntimeError):
    """A replica refused the voice for good (4xx): the checkpoint or the request is wrong; retrying cannot help."""


class InferenceUnavailable(RuntimeError):
    """No replica answered, or one failed (5xx, timeout): worth retrying later."""


class InferenceFleet:
    def __init__(
        self, resolver: EndpointResolver, load_timeout: float = 900.0, headers: dict[str, str] | None = None
    ):
        self.resolver = resolver
        self.load_timeout = load_timeout
        self.headers = dict(headers or {})  # the API key, when the inference servers require one

    async def register(
        self, job_id: str, speaker_name: str, s3_prefix: str, *, key: str | None = None
    ) -> str:
        """Register the voice everywhere and preload it on the owner of ``key`` (default: the voice id); returns
        the owner's URL."""
        endpoints = await self.resolver.endpoints()
        if not endpoints:
            raise InferenceUnavailable("the inference Service has no ready replica")
        owner, *others = rendezvous_order(key or job_id, endpoints)
        body = {"speaker_name": speaker_name, "s3_prefix": s3_prefix}
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.load_timeout, connect=10.0), headers=self.headers
        ) as client:
            await self._post(client, owner, job_id, {**body, "preload": True})
            await asyncio.gather(
                *(self._post(client, other, job_id, {**body, "preload": False}) for other in others)
            )
        return owner

    async def register_on(self, endpoint: str, job_id: str, *, speaker_name: str, s3_prefix: str) -> None:
        """Register (without preloading) on one replica."""
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=10.0), headers=self.headers
        ) as client:
            await self._post(client, endpoint, job_id, {"speaker_name": speaker_name, "s3_prefix": s3_prefix})

    async def unregister(self, job_id: str) -> int:
        """Remove the voice from every replica's registry and caches; returns how many replicas had it."""
        endpoints = await self.resolver.endpoints()
        async with httpx.AsyncClient(timeout=30.0, headers=self.headers) as client:
            results = await asyncio.gather(*(self._delete(client, url, job_id) for url in endpoints))
        return sum(results)

    async def registered(self, endpoint: str) -> set[str]:
        """The job ids a replica has registered."""
        async with httpx.AsyncClient(timeout=10.0, headers=self.headers) as client:
            response = await client.get(f"{endpoint}/voices")
            response.raise_for_status()
            return {item["job_id"] for item in response.json() if isinstance(item, dict) and "job_id" in item}

    async def _post(
        self, client: httpx.AsyncClient, endpoint: str, job_id: str, body: dict[str, Any]
    ) -> None:
        try:
            response = await client.post(f"{endpoint}/voices/{job_id}", json=body)
        except httpx.HTTPError as exc:
            raise InferenceUnavailable(f"{endpoint}: {exc!r}") from exc
        if 400 <= response.status_code < 500:
            raise VoiceRejected(
                f"{endpoint} refused voice {job_id}: {response.status_code} {_detail(response)}"
            )
        if response.status_code >= 500:
            raise InferenceUnavailable(f"{endpoint}: {response.status_code} {_detail(response)}")

    async def _delete(self, client: httpx.AsyncClient, endpoint: str, job_id: str) -> bool:
        try:
            response = await client.delete(f"{endpoint}/voices/{job_id}")
        except httpx.HTTPError as exc:
            raise InferenceUnavailable(f"{endpoint}: {exc!r}") from exc
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise InferenceUnavailable(f"{endpoint}: {response.status_code} {_detail(response)}")
        return True


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))[:500]
    except (ValueError, AttributeError):
        return response.text[:500]
