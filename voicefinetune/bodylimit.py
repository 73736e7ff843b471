"""Request body caps shared by the facade and the inference server: a JSON (non-multipart) body over
``VFT_MAX_JSON_BYTES`` is a 413 before anything parses it; a multipart body is a 415 unread except on the upload
routes, where one announced over ``VFT_MAX_UPLOAD_BYTES`` is a 413 at once (the upload route also counts while it
streams, for bodies without a Content-Length)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .openai_compat import error_body_for
from .security import ASGIApp, Message, Receive, Scope, Send, send_json
from .settings import Settings

MULTIPART = b"multipart/"


def too_large(path: str, limit: int, what: str) -> dict[str, Any]:
    return error_body_for(path, 413, f"the {what} exceeds the limit of {limit} bytes")


def not_an_upload_route(path: str, upload_paths: Collection[str]) -> dict[str, Any]:
    takes = (
        f"only POST {', '.join(sorted(upload_paths))} takes one"
        if upload_paths
        else "no route here takes one"
    )
    return error_body_for(
        path, 415, f"a multipart body is an upload and {takes}: send JSON (Content-Type: application/json)"
    )


class BodyLimitMiddleware:
    """Reads a non-multipart body fully (at most ``max_json_bytes``) before the app sees it, then replays it; lets a
    multipart body through, unread, only to ``upload_paths``."""

    def __init__(
        self, app: ASGIApp, max_json_bytes: int, max_upload_bytes: int, upload_paths: Collection[str] = ()
    ):
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes
        self.upload_paths = frozenset(upload_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        multipart = headers.get(b"content-type", b"").lower().startswith(MULTIPART)
        if multipart and scope.get("path") not in self.upload_paths:
            await send_json(send, 415, not_an_upload_route(scope.get("path", ""), self.upload_paths))
            return
        limit, what = (
            (self.max_upload_bytes, "upload") if multipart else (self.max_json_bytes, "request body (JSON)")
        )
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            await send_json(send, 413, too_large(scope.get("path", ""), limit, what))
            return
        if multipart:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone (or was dropped for sending too slowly): nothing to answer
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await send_json(send, 413, too_large(scope.get("path", ""), limit, what))
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(messages, receive), send)


def _content_length(headers: dict[bytes, bytes]) -> int | None:
    try:
        return int(headers[b"content-length"])
    except (KeyError, ValueError):
        return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def limit_bodies(app: Any, settings: Settings, *, upload_paths: Collection[str] = ()) -> None:
    """Cap ``app``'s request bodies; ``upload_paths`` are the routes that take a multipart upload."""
    app.add_middleware(
        BodyLimitMiddleware,
        max_json_bytes=settings.max_json_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        upload_paths=upload_paths,
    )
