"""The request-body caps on their own (BodyLimitMiddleware around an echo app): exactly the limit passes, one byte
over is a 413, whether the size is announced by Content-Length or only counted while the body streams (chunked)."""

from __future__ import annotations

import pytest

from voicefinetune.bodylimit import BodyLimitMiddleware, limit_bodies
from voicefinetune.settings import Settings

from .asgi_helpers import Echo, call

JSON_LIMIT = 1000
UPLOAD_LIMIT = 5000
UPLOAD_PATH = "/upload"
JSON = {"Content-Type": "application/json"}
MULTIPART = {"Content-Type": "multipart/form-data; boundary=x"}
JSON_413 = {"detail": "the request body (JSON) exceeds the limit of 1000 bytes"}
UPLOAD_413 = {"detail": "the upload exceeds the limit of 5000 bytes"}


def guarded() -> tuple[BodyLimitMiddleware, Echo]:
    echo = Echo()
    middleware = BodyLimitMiddleware(
        echo, max_json_bytes=JSON_LIMIT, max_upload_bytes=UPLOAD_LIMIT, upload_paths=(UPLOAD_PATH,)
    )
    return middleware, echo


def pieces(size: int, parts: int = 3) -> list[bytes]:
    body = bytes(range(256)) * (size // 256 + 1)
    cuts = [size * i // parts for i in range(parts + 1)]
    return [body[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_json_body_of_exactly_the_limit_reaches_the_app_whole(declared):
    app, echo = guarded()
    chunks = pieces(JSON_LIMIT)
    headers = {**JSON, **({"Content-Length": str(JSON_LIMIT)} if declared else {})}
    answer = await call(app, headers=headers, chunks=chunks)
    assert (answer.status, answer.json()) == (200, {"received": JSON_LIMIT})
    assert echo.bodies == [b"".join(chunks)]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_json_body_one_byte_over_is_413_and_never_reaches_the_app(declared):
    app, echo = guarded()
    headers = {**JSON, **({"Content-Length": str(JSON_LIMIT + 1)} if declared else {})}
    answer = await call(app, headers=headers, chunks=pieces(JSON_LIMIT + 1))
    assert (answer.status, answer.json()) == (413, JSON_413)
    assert answer.headers[b"content-type"] == b"application/json"
    assert echo.bodies == []


async def test_an_announced_oversize_body_is_refused_before_reading_any_of_it():
    app, echo = guarded()
    answer = await call(app, headers={**JSON, "Content-Length": str(JSON_LIMIT + 1)}, chunks=[b"{}"])
    assert (answer.status, answer.json(), answer.reads, echo.bodies) == (413, JSON_413, 0, [])


async def test_a_chunked_body_stops_being_read_at_the_first_chunk_over_the_limit():
    app, echo = guarded()
    chunks = [b"a" * 600, b"b" * 600, b"c" * 600]
    answer = await call(app, headers=JSON, chunks=chunks)
    assert (answer.status, answer.json(), answer.reads, echo.bodies) == (413, JSON_413, 2, [])


async def test_a_body_without_a_content_type_counts_as_json():
    app, _ = guarded()
    answer = await call(app, chunks=pieces(JSON_LIMIT + 1, parts=1))
    assert (answer.status, answer.json()) == (413, JSON_413)


@pytest.mark.parametrize(("size", "status"), [(UPLOAD_LIMIT, 200), (UPLOAD_LIMIT + 1, 413)])
async def test_a_multipart_upload_is_checked_against_the_upload_limit_by_its_content_length(size, status):
    app, echo = guarded()
    chunks = pieces(size)
    answer = await call(
        app, path=UPLOAD_PATH, headers={**MULTIPART, "Content-Length": str(size)}, chunks=chunks
    )
    assert answer.status == status
    if status == 200:
        assert answer.json() == {"received": size}
        assert echo.bodies == [
            b"".join(chunks)
        ]  # streamed through, over the JSON limit: the upload route counts it
    else:
        assert (answer.json(), answer.reads, echo.bodies) == (UPLOAD_413, 0, [])


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "DELETE"])
async def test_bodiless_methods_pass_untouched(method):
    app, echo = guarded()
    answer = await call(
        app, method=method, headers={**JSON, "Content-Length": "999999"}, chunks=[b"x" * 2000]
    )
    assert (answer.status, answer.json(), echo.bodies) == (200, {"received": 2000}, [b"x" * 2000])


async def test_a_malformed_content_length_falls_back_to_counting():
    app, echo = guarded()
    under = await call(app, headers={**JSON, "Content-Length": "lots"}, chunks=[b"x" * 10])
    over = await call(app, headers={**JSON, "Content-Length": "lots"}, chunks=[b"x" * (JSON_LIMIT + 1)])
    assert (under.status, under.json(), over.status, over.json()) == (200, {"received": 10}, 413, JSON_413)
    assert echo.bodies == [b"x" * 10]


async def test_the_replayed_body_is_followed_by_the_clients_own_messages():
    """After the buffered body, the app's next receive() reaches the client again (a disconnect here)."""
    seen: list[dict] = []

    async def app(scope, receive, send) -> None:
        seen.append(await receive())
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    answer = await call(
        BodyLimitMiddleware(app, max_json_bytes=JSON_LIMIT, max_upload_bytes=UPLOAD_LIMIT),
        headers=JSON,
        chunks=[b"{}"],
    )
    assert answer.status == 204
    assert seen == [{"type": "http.request", "body": b"{}", "more_body": False}, {"type": "http.disconnect"}]


async def test_a_multipart_body_off_the_upload_routes_is_415_unread():
    app, echo = guarded()
    answer = await call(
        app, path="/voice-design", headers={**MULTIPART, "Content-Length": "10"}, chunks=[b"x" * 10]
    )
    assert (answer.status, answer.reads, echo.bodies) == (415, 0, [])
    assert answer.json() == {
        "detail": "a multipart body is an upload and only POST /upload takes one: send JSON "
        "(Content-Type: application/json)"
    }
    no_uploads = BodyLimitMiddleware(echo, max_json_bytes=JSON_LIMIT, max_upload_bytes=UPLOAD_LIMIT)
    answer = await call(no_uploads, path="/upload", headers=MULTIPART)
    assert answer.status == 415
    assert answer.json()["detail"].startswith("a multipart body is an upload and no route here takes one: ")


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_on_the_openai_routes_the_413_has_openais_error_shape(declared):
    app, _ = guarded()
    headers = {**JSON, **({"Content-Length": str(JSON_LIMIT + 1)} if declared else {})}
    answer = await call(app, path="/v1/audio/speech", headers=headers, chunks=pieces(JSON_LIMIT + 1))
    assert answer.status == 413
    assert answer.json()["error"]["message"] == JSON_413["detail"]


async def test_a_client_that_hangs_up_mid_body_gets_no_answer_and_the_app_nothing():
    app, echo = guarded()
    answer = await call(app, headers=JSON, chunks=[b"{", b'"a"'], hang_up=True)
    assert (answer.status, answer.reads, echo.bodies) == (0, 3, [])


async def test_a_message_without_more_body_ends_the_body():
    echo = Echo()
    app = BodyLimitMiddleware(echo, max_json_bytes=JSON_LIMIT, max_upload_bytes=UPLOAD_LIMIT)
    messages = [{"type": "http.request", "body": b"{}"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": "/x", "headers": []}, receive, send)
    assert sent[0]["status"] == 200 and echo.bodies == [b"{}"]


async def test_limit_bodies_wires_the_settings_and_the_upload_routes():
    from fastapi import FastAPI

    app = FastAPI()
    settings = Settings.from_env({"VFT_MAX_JSON_BYTES": "10", "VFT_MAX_UPLOAD_BYTES": "20"})
    limit_bodies(app, settings, upload_paths={"/upload"})
    json_over = await call(app, headers=JSON, chunks=[b"x" * 11])
    upload_over = await call(app, path="/upload", headers={**MULTIPART, "Content-Length": "21"})
    elsewhere = await call(app, path="/other", headers=MULTIPART)
    assert (json_over.status, json_over.json()) == (
        413,
        {"detail": "the request body (JSON) exceeds the limit of 10 bytes"},
    )
    assert (upload_over.status, upload_over.json()) == (
        413,
        {"detail": "the upload exceeds the limit of 20 bytes"},
    )
    assert elsewhere.status == 415 and "only POST /upload takes one" in elsewhere.json()["detail"]


async def test_the_app_gets_the_requests_own_scope_after_the_body_is_counted():
    seen: list[tuple[str, str]] = []
    echo = Echo()

    async def app(scope, receive, send):
        seen.append((scope["type"], scope["path"]))
        await echo(scope, receive, send)

    middleware = BodyLimitMiddleware(app, max_json_bytes=JSON_LIMIT, max_upload_bytes=UPLOAD_LIMIT)
    answer = await call(middleware, path="/somewhere", headers=JSON, chunks=[b"{}"])
    assert (answer.status, answer.json()) == (200, {"received": 2})
    assert seen == [("http", "/somewhere")]
