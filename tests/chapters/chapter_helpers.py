"""Helpers for the chapter tests: a `vft serve` with a webhook secret, a webhook receiver on loopback, the texts."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.helpers.servers import Server, ServerThread, free_port, server_environment
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage

SECRET = "chapter-test-secret"
SIGNATURE_HEADER = "X-Voicefinetune-Signature"
TIMESTAMP_HEADER = "X-Voicefinetune-Timestamp"


class Receiver:
    """A webhook receiver on loopback keeping every request's raw body and headers."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, dict[str, str]]] = []
        self._lock = threading.Lock()

        async def hook(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.calls.append((body, dict(request.headers)))
            return Response(status_code=204)

        self.thread = ServerThread(Starlette(routes=[Route("/hook", hook, methods=["POST"])]))

    @property
    def url(self) -> str:
        return f"{self.thread.url}/hook"

    def wait_for(self, event_id: str, timeout: float = 60.0) -> tuple[bytes, dict[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for body, headers in self.calls:
                    if json.loads(body).get("id") == event_id:
                        return body, headers
            time.sleep(0.05)
        raise AssertionError(f"no webhook for {event_id} in {timeout} s: {self.calls}")


def chapter_server(root: Path, s3_endpoint: str, tiny_root: Path, receiver: Receiver) -> Server:
    env = server_environment(
        root / "data",
        s3_endpoint=s3_endpoint,
        bucket=f"vft-chap-{uuid.uuid4().hex[:10]}",
        tiny_root=tiny_root,
    )
    env["VFT_WEBHOOK_SECRET"] = SECRET
    env["VFT_TRUSTED_URL_ORIGINS"] = receiver.thread.url  # the receiver is on loopback
    Storage(Settings.from_env(env)).ensure_bucket()
    return Server(env=env, port=free_port(), log_path=root / "serve.log").start()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    hooks = Receiver()
    hooks.thread.start()
    yield hooks
    hooks.thread.stop()


def wait_synthesis(
    server: Server, synthesis_id: str, statuses=("succeeded", "failed"), timeout=240.0
) -> dict:
    return server.wait_for(synthesis_id, statuses, timeout, collection="synthesis")


SUBJECTS = ("The miller", "Dr. Hale", "A tired fox", "Old J. R. Mason", "The ferryman", "Our neighbour")
VERBS = ("walked past", "looked at", "counted", "painted", "carried", "forgot")
OBJECTS = ("the river", "3.5 barrels", "a red door", "the north road", "two lanterns", "the bell")


def sentences(count: int) -> list[str]:
    """``count`` different sentences of 55-75 characters, some with abbreviations, initials and decimals (none of
    which may split them)."""
    out = []
    for n in range(count):
        subject = SUBJECTS[n % len(SUBJECTS)]
        verb = VERBS[(n // len(SUBJECTS)) % len(VERBS)]
        thing = OBJECTS[(n * 5) % len(OBJECTS)]
        out.append(f"{subject} {verb} {thing} on day {n + 1} of the long winter.")
    return out
