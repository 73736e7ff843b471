"""Drive an ASGI middleware directly: the request's body in the chunks given, the answer and what the inner app saw.

The inner app is an echo: it reads the whole body it is handed and answers 200 with it, so a test sees exactly
which bytes got through the middleware and whether the app was reached at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Echo:
    """The inner app: records each request's body, answers 200 with ``{"received": <bytes read>}``."""

    bodies: list[bytes] = field(default_factory=list)

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        payload = json.dumps({"received": len(body)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    reads: int  # how many messages the middleware (or the app) took from the client

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app,
    *,
    method: str = "POST",
    path: str = "/x",
    headers: dict[str, str] | None = None,
    chunks: list[bytes] | None = None,
    hang_up: bool = False,
) -> Answer:
    """Send one HTTP request through ``app``; ``chunks`` arrive as separate ``http.request`` messages. With
    ``hang_up`` the client disconnects after its chunks instead of ending the body. Status 0: no answer was sent."""
    chunks = chunks or [b""]
    messages = [
        {"type": "http.request", "body": chunk, "more_body": hang_up or index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    reads = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    await app(scope, receive, send)
    start = next((m for m in sent if m["type"] == "http.response.start"), {"status": 0, "headers": []})
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], dict(start["headers"]), body, reads)
