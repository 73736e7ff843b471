"""Webhooks: a signed JSON event POSTed to a client's URL when a synthesis or a fine-tune finishes.

Signing: the body is the event's JSON (``{type, id, status, timestamp, ...}``), sent as is; the header
``X-Voicefinetune-Signature: sha256=<hex>`` is the HMAC-SHA256 of those raw bytes keyed by ``VFT_WEBHOOK_SECRET``.
``X-Voicefinetune-Timestamp`` repeats the body's ``timestamp`` (Unix seconds): since the timestamp is inside the
signed body, a receiver that checks the signature, that the header equals the body's value and that it is recent
refuses replays. Without a secret the event is sent unsigned.

Delivery never blocks the work: it runs as a background task, retried with bounded exponential backoff on a
connection error or a 5xx/429 answer. The URL passes the same address policy as reference audio
(`url_safety`): it is checked when the request names it (a private or loopback host is the caller's error) and
again when the event is sent, connecting to the checked address (no second lookup an attacker could rebind).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx

from .input_echo import short_repr
from .schemas import InvalidInput
from .settings import Settings
from .url_safety import IPAddress, resolve_checked, trusted_origins, url_origin

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Voicefinetune-Signature"
TIMESTAMP_HEADER = "X-Voicefinetune-Timestamp"
MAX_URL_CHARS = 2048
SEND_TIMEOUT_SECONDS = 10.0
ATTEMPTS = 5
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
HOW_TO_ALLOW = (
    "give a public URL; to allow private hosts set VFT_ALLOW_PRIVATE_URLS=1 or list the origin in "
    "VFT_TRUSTED_URL_ORIGINS"
)


def signature(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=`` and the hex HMAC-SHA256 keyed by ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def event_body(event_type: str, object_id: str, status: str, **fields: Any) -> bytes:
    event = {"type": event_type, "id": object_id, "status": status, "timestamp": int(time.time()), **fields}
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()


def _parts(url: str) -> SplitResult:
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"webhook_url is {len(url)} characters long; the limit is {MAX_URL_CHARS}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInput(f"webhook_url {short_repr(url)} is not a valid URL: {exc}") from exc
    if url_origin(parts) is None:
        raise InvalidInput(f"webhook_url must be an http(s) URL with a host, got {short_repr(url)}")
    return parts


async def checked_address(url: str, settings: Settings) -> IPAddress:
    """The address to send ``url``'s events to; InvalidInput when any address its host resolves to is refused."""
    parts = _parts(url)
    origin = url_origin(parts)
    assert origin is not None and parts.hostname  # _parts checked both
    allow_private = settings.allow_private_urls or origin in trusted_origins(settings)
    return await resolve_checked(
        parts.hostname,
        origin[2],
        allow_private,
        field="webhook_url",
        how_to_allow=HOW_TO_ALLOW,
        error=InvalidInput,
    )


async def check_webhook_url(url: str | None, settings: Settings) -> str | None:
    """``url`` when it may receive webhooks (None stays None); InvalidInput says why not."""
    if url is None:
        return None
    await checked_address(url, settings)
    return url


class WebhookSender:
    """Sends events in the background; ``close`` waits briefly for deliveries under way and drops the rest."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, url: str | None, body: bytes) -> None:
        """Deliver ``body`` to ``url`` (nothing without a URL) in a task of its own; called outside an event loop
        (a worker thread), in a thread of its own."""
        if not url:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            threading.Thread(target=asyncio.run, args=(self._deliver(url, body),), daemon=True).start()
            return
        task = loop.create_task(self._deliver(url, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def job_finished(self, url: str | None, job_id: str, status: str, **fields: Any) -> None:
        """The event of a fine-tune that ended (ready or failed)."""
        self.send(url, event_body("finetune", job_id, status, **fields))

    async def close(self, grace: float = 2.0) -> None:
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()

    def headers(self, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(json.loads(body)["timestamp"])}
        if self.settings.webhook_secret:
            headers[SIGNATURE_HEADER] = signature(self.settings.webhook_secret, body)
        return headers

    async def _deliver(self, url: str, body: bytes) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        for attempt in range(1, ATTEMPTS + 1):
            try:
                status = await self._post(url, body)
                if status < 500 and status != 429:
                    if status >= 400:
                        log.warning("webhook %s answered %d; not retried", url, status)
                    return
                reason = f"HTTP {status}"
            except InvalidInput as exc:  # the host now resolves somewhere refused: never retried
                log.warning("webhook %s not sent: %s", url, exc)
                return
            except httpx.HTTPError as exc:
                reason = repr(exc)
            if attempt < ATTEMPTS:
                log.info("webhook %s failed (%s); retry %d in %.0f s", url, reason, attempt, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        log.warning("webhook %s given up after %d attempts", url, ATTEMPTS)

    async def _post(self, url: str, body: bytes) -> int:
        parts = _parts(url)
        address = await checked_address(url, self.settings)
        host = f"[{address}]" if address.version == 6 else str(address)
        port = f":{parts.port}" if parts.port else ""
        pinned = f"{parts.scheme}://{host}{port}{parts.path or '/'}" + (
            f"?{parts.query}" if parts.query else ""
        )
        host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        async with httpx.AsyncClient(
            follow_redirects=False, trust_env=False, timeout=SEND_TIMEOUT_SECONDS
        ) as client:
            request = client.build_request(
                "POST", pinned, content=body, headers={**self.headers(body), "Host": str(host_header)}
            )
            request.extensions.update(extensions)
            response = await client.send(request)
            return response.status_code
