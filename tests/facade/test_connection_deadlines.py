"""Connection deadlines on real servers over loopback sockets (`vft serve` and `vft inference`, started with
VFT_HEADER_TIMEOUT=2 and VFT_BODY_TIMEOUT=2): a client trickling its headers or stalling its body is dropped at the
deadline, an upload that keeps sending runs as long as it needs."""

from __future__ import annotations

import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.helpers.servers import Server, free_port, server_environment
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
SLACK = (
    3.0  # the server's timer may fire late on a busy machine; a connection left open is never closed at all
)
PACE = 0.5  # seconds between two pieces of the steady upload: well inside BODY_TIMEOUT
PIECES = 3 * int(HEADER_TIMEOUT / PACE)  # the upload lasts three header deadlines
SLOW_HEADERS = b"POST /voice-design HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\r\n"
REQUEST_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: 42\r\n\r\nthe request headers did not arrive in time"
)


@pytest.fixture(scope="module", params=["serve", "inference"])
def server(request, tmp_path_factory, s3_endpoint: str, tiny_models) -> Iterator[tuple[str, str]]:
    """(command, base URL) of a `vft serve` and of a `vft inference` with 2 s deadlines."""
    command = request.param
    root = tmp_path_factory.mktemp(command)
    env = server_environment(
        root / "data",
        s3_endpoint=s3_endpoint,
        bucket=f"vft-dl-{uuid.uuid4().hex[:10]}",
        tiny_root=tiny_models.root,
    )
    env |= {"VFT_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "VFT_BODY_TIMEOUT": str(BODY_TIMEOUT)}
    Storage(Settings.from_env(env)).ensure_bucket()
    server = Server(env=env, port=free_port(), log_path=root / f"{command}.log", command=command).start()
    yield command, server.url
    server.stop()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def until_closed(sock: socket.socket, give_up: float, trickle: bytes = b"") -> tuple[bytes, float, int]:
    """Send ``trickle`` one byte a second while reading, until the server closes the connection: what it sent, the
    seconds it took and how many bytes went out. Fails when the connection is still open after ``give_up`` s."""
    started = time.monotonic()
    received, sent = b"", 0
    while (now := time.monotonic()) < started + give_up:
        if sent < len(trickle) and now >= started + sent:
            try:
                sock.sendall(trickle[sent : sent + 1])
            except OSError:
                break
            sent += 1
        next_byte = started + sent if sent < len(trickle) else started + give_up
        readable, _, _ = select.select([sock], [], [], max(0.0, min(next_byte, started + give_up) - now))
        if readable:
            chunk = sock.recv(65536)
            if not chunk:
                return received, time.monotonic() - started, sent
            received += chunk
    raise AssertionError(f"still open after {give_up} s (sent {sent} bytes, received {received!r})")


def steady_upload(command: str, url: str) -> tuple[httpx.Response, int]:
    """A request whose body comes a piece every PACE seconds for 3 × HEADER_TIMEOUT: the upload route's multipart
    form on `vft serve`, a JSON body padded with whitespace on `vft inference` (which has no upload route)."""
    sent = 0

    def pieces(head: bytes, piece: bytes, tail: bytes) -> Iterator[bytes]:
        nonlocal sent
        yield head
        for _ in range(PIECES):
            time.sleep(PACE)  # the client's own pace, not a wait on the server
            sent += 1
            yield piece
        yield tail

    if command == "serve":
        boundary = "steady-upload"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="num_epochs"\r\n\r\n0\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="dataset"; filename="d.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        body = pieces(head, b"z" * 65536, f"\r\n--{boundary}--\r\n".encode())
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        path = "/finetune"
    else:
        body = pieces(b"", b" " * 65536, json.dumps({"instruct": "warm"}).encode())
        headers = {"Content-Type": "application/json"}
        path = "/voice-design"
    response = httpx.post(url + path, content=body, headers=headers, timeout=60)
    return response, sent


STEADY_ANSWER = {
    "serve": {
        "detail": "num_epochs: Input should be greater than or equal to 1 (got '0')",
        "message": "num_epochs: Input should be greater than or equal to 1 (got '0')",
        "errors": [
            {
                "type": "greater_than_equal",
                "loc": ["body", "num_epochs"],
                "msg": "Input should be greater than or equal to 1",
                "input": "0",
            }
        ],
    },
    "inference": {
        "detail": "text: Field required",
        "message": "text: Field required",
        "errors": [
            {
                "type": "missing",
                "loc": ["body", "text"],
                "msg": "Field required",
                "input": {"instruct": "warm"},
            }
        ],
    },
}


def test_trickled_headers_are_dropped_at_the_deadline_while_a_steady_upload_completes(server):
    command, url = server
    with ThreadPoolExecutor(1) as pool:
        upload = pool.submit(steady_upload, command, url)
        with connect(url) as slow:
            received, seconds, sent = until_closed(slow, give_up=HEADER_TIMEOUT + SLACK, trickle=SLOW_HEADERS)
        response, pieces_sent = upload.result(timeout=PIECES * PACE + 60)
    assert received == REQUEST_TIMEOUT_408
    assert HEADER_TIMEOUT - 0.2 <= seconds <= HEADER_TIMEOUT + SLACK and sent < len(SLOW_HEADERS)
    assert pieces_sent == PIECES  # every piece went out: the upload outlived the header deadline three times
    assert (response.status_code, response.json()) == (422, STEADY_ANSWER[command])


def test_a_connection_that_never_sends_is_closed_at_the_header_deadline(server):
    _, url = server
    with connect(url) as idle:
        received, seconds, _ = until_closed(idle, give_up=HEADER_TIMEOUT + SLACK)
    assert received == b""  # nothing was asked, nothing is answered
    assert HEADER_TIMEOUT - 0.2 <= seconds <= HEADER_TIMEOUT + SLACK


def test_a_body_that_stops_coming_is_dropped_after_the_body_timeout(server):
    _, url = server
    with connect(url) as stalled:
        stalled.sendall(
            b"POST /voice-design HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"text": '
        )
        received, seconds, _ = until_closed(stalled, give_up=BODY_TIMEOUT + SLACK)
    assert received == b""  # the app was still reading: there is no answer to give
    assert BODY_TIMEOUT - 0.2 <= seconds <= BODY_TIMEOUT + SLACK
