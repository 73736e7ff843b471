"""The progress receiver: trainer pods POST their progress events here and the operator writes them into status.

Least privilege: trainer pods get no Kubernetes API access at all (no ServiceAccount token). Each Job carries a
token that is an HMAC of its resource's namespace/name under the operator's secret key; it authorizes reports for
that one resource only. Reports are throttled per resource (stage changes always go through at once).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from voicefinetune.metrics import exposition
from voicefinetune_operator.metrics import PROGRESS_EVENTS

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 64 * 1024
Write = Callable[[str, str, dict[str, Any]], Awaitable[bool]]


def progress_token(secret_key: str, namespace: str, name: str) -> str:
    return hmac.new(secret_key.encode(), f"{namespace}/{name}".encode(), hashlib.sha256).hexdigest()


def progress_path(namespace: str, name: str) -> str:
    return f"/progress/{namespace}/{name}"


class ProgressThrottle:
    """At most one status write per resource every ``interval`` seconds. A report that arrives sooner waits as the
    pending one (a newer report replaces it) and is written when the interval is up, so the last one always lands;
    a report with a new stage is written at once."""

    def __init__(self, write: Write, interval: float):
        self.write = write
        self.interval = interval
        self._last: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._pending: dict[tuple[str, str], dict[str, Any]] = {}
        self._flushers: dict[tuple[str, str], asyncio.Task] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def report(self, namespace: str, name: str, event: dict[str, Any]) -> str:
        """'applied', 'throttled' (written later) or 'ignored' (the resource is gone or finished)."""
        key = (namespace, name)
        last_time, last_stage = self._last.get(key, (-float("inf"), None))
        due = time.monotonic() - last_time >= self.interval
        if due or event.get("stage") != last_stage:
            self._pending.pop(key, None)
            return "applied" if await self._write(key, event) else "ignored"
        self._pending[key] = event
        if key not in self._flushers or self._flushers[key].done():
            wait = max(0.0, last_time + self.interval - time.monotonic())
            self._flushers[key] = asyncio.create_task(self._flush_later(key, wait))
        return "throttled"

    async def _write(self, key: tuple[str, str], event: dict[str, Any]) -> bool:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            self._last[key] = (time.monotonic(), event.get("stage"))
            return await self.write(key[0], key[1], event)

    async def _flush_later(self, key: tuple[str, str], wait: float) -> None:
        await asyncio.sleep(wait)
        event = self._pending.pop(key, None)
        if event is not None:
            try:
                await self._write(key, event)
            except Exception:
                log.exception("writing the progress of %s/%s failed", *key)

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._last.pop(key, None)
        self._pending.pop(key, None)
        self._locks.pop(key, None)
        task = self._flushers.pop(key, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        for task in self._flushers.values():
            task.cancel()
        await asyncio.gather(*self._flushers.values(), return_exceptions=True)


def build_app(secret_key: str, throttle: ProgressThrottle) -> web.Application:
    """POST /progress/{namespace}/{name} (the trainers), GET /metrics (Prometheus), GET /healthz."""

    async def receive(request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        expected = progress_token(secret_key, namespace, name)
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not supplied or not hmac.compare_digest(supplied, expected):
            PROGRESS_EVENTS.labels("rejected").inc()
            return _problem(401, "missing or wrong bearer token for this resource (VFT_PROGRESS_TOKEN)")
        if (request.content_length or 0) > MAX_REPORT_BYTES:
            PROGRESS_EVENTS.labels("rejected").inc()
            return _problem(413, f"a progress report is limited to {MAX_REPORT_BYTES} bytes")
        try:
            event = json.loads(await request.read())
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("stage"), str):
            PROGRESS_EVENTS.labels("rejected").inc()
            return _problem(
                400, "the body must be a JSON object with a string 'stage' (a trainer progress event)"
            )
        try:
            result = await throttle.report(namespace, name, event)
        except Exception as exc:  # the API server is unreachable: tell the trainer, which goes on regardless
            log.warning("progress of %s/%s not recorded: %s", namespace, name, exc)
            return _problem(503, f"progress not recorded: {exc}")
        PROGRESS_EVENTS.labels(result).inc()
        if result == "ignored":
            return _problem(404, f"no active VoiceFinetune {namespace}/{name}")
        return web.json_response({"result": result}, status=202)

    async def metrics(_: web.Request) -> web.Response:
        body, content_type = exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=MAX_REPORT_BYTES)
    app.router.add_post("/progress/{namespace}/{name}", receive)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


def _problem(status: int, detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status)
