"""The optional API key shared by the facade and the inference server (off unless ``VFT_API_KEY`` is set).

With keys configured, every request except the open paths (health, probes, the API documentation pages with their
assets and schema, optionally ``/metrics``) must carry one of them as ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``; otherwise the answer is a JSON 401. The documentation stays open so that a browser can load
Swagger UI and send the key with its Authorize button. Keys are
compared in constant time, and several comma-separated keys are accepted so a key can be rotated without downtime.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .openai_compat import error_body_for
from .settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH_PATHS = frozenset({"/", "/healthz", "/readyz", "/livez"})
METRICS_PATH = "/metrics"
OPENAPI_PATH, SWAGGER_PATH, REDOC_PATH = "/openapi.json", "/docs", "/redoc"
DOCS_PATHS = frozenset({OPENAPI_PATH, SWAGGER_PATH, REDOC_PATH})
DOCS_ASSETS_PATH = "/docs-assets"  # Swagger UI's and ReDoc's files (voicefinetune.api_docs)
API_KEY_HEADER = "X-API-Key"
UNAUTHORIZED = (
    f"missing or invalid API key: send it as 'Authorization: Bearer <key>' or '{API_KEY_HEADER}: <key>'"
)


def parse_keys(value: str | None) -> tuple[str, ...]:
    """The keys of a comma-separated ``VFT_API_KEY`` (blanks ignored)."""
    return tuple(key.strip() for key in (value or "").split(",") if key.strip())


def client_key(settings: Settings) -> str | None:
    """The key this process sends to the other servers of the project (the first configured one)."""
    keys = parse_keys(settings.api_key)
    return keys[0] if keys else None


def auth_headers(settings: Settings) -> dict[str, str]:
    """Headers for a call to another server of the project (empty without an API key)."""
    key = client_key(settings)
    return {"Authorization": f"Bearer {key}"} if key else {}


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        lowered = name.lower()
        if lowered == API_KEY_HEADER.lower().encode():
            return value.decode("latin-1").strip()
        if lowered == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    return None


def key_matches(presented: str | None, keys: tuple[str, ...]) -> bool:
    if not presented:
        return False
    offered = presented.encode()
    # Every key is compared (no early exit), so the timing says nothing about which key or prefix matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(offered, key.encode())
    return matched


class ApiKeyMiddleware:
    """ASGI middleware: 401 JSON for a request without a valid key, except on the open paths."""

    def __init__(
        self,
        app: ASGIApp,
        keys: tuple[str, ...],
        open_paths: frozenset[str] = HEALTH_PATHS,
        open_prefixes: tuple[str, ...] = (),
    ):
        self.app = app
        self.keys = keys
        self.open_paths = open_paths
        self.open_prefixes = open_prefixes

    def is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(self.open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or self.is_open(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if key_matches(presented_key(scope.get("headers", [])), self.keys):
            await self.app(scope, receive, send)
            return
        await send_json(
            send,
            401,
            unauthorized_body(scope.get("path", "")),
            extra_headers=[(b"www-authenticate", b"Bearer")],
        )


def unauthorized_body(path: str) -> dict[str, Any]:
    """The 401 body: OpenAI's error shape on the OpenAI-compatible routes (``/v1/...``), ``detail`` elsewhere."""
    return error_body_for(path, 401, UNAUTHORIZED, code="invalid_api_key")


def open_paths(settings: Settings) -> frozenset[str]:
    paths = HEALTH_PATHS | DOCS_PATHS
    return paths | {METRICS_PATH} if settings.metrics_public else paths


def protect(app: Any, settings: Settings) -> None:
    """Require the API key on ``app`` (a FastAPI/Starlette app) when ``VFT_API_KEY`` is set."""
    keys = parse_keys(settings.api_key)
    if keys:
        app.add_middleware(
            ApiKeyMiddleware,
            keys=keys,
            open_paths=open_paths(settings),
            open_prefixes=(DOCS_ASSETS_PATH + "/",),
        )


async def send_json(
    send: Send, status: int, body: dict[str, Any], extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": payload})
