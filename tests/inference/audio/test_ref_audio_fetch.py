"""The SSRF guard's fetch against a real HTTP server on loopback: private addresses refused unless allowed or
trusted, redirects re-checked and bounded, the size cap at its boundary, the Host header of the name asked for."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from voicefinetune_inference.audio.reference import (
    MAX_REF_AUDIO_BYTES,
    RefAudioError,
    fetch_url,
    load_reference_audio,
)

AUDIO = b"RIFF-not-really-audio"


class Handler(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        Handler.hosts.append(self.headers["Host"])
        if self.path == "/audio":
            self._answer(200, AUDIO)
        elif self.path == "/redirect":
            self._redirect("/audio")
        elif self.path == "/loop":
            self._redirect("/loop")
        elif self.path == "/declared-too-big":
            self.send_response(200)
            self.send_header("Content-Length", str(MAX_REF_AUDIO_BYTES + 1))
            self.end_headers()
        elif self.path in ("/exactly-the-limit", "/one-byte-over"):
            size = MAX_REF_AUDIO_BYTES + (self.path == "/one-byte-over")
            self.send_response(200)
            self.send_header("Connection", "close")  # no Content-Length: the size shows only while reading
            self.end_headers()
            self.wfile.write(bytes(size))
        else:
            self._answer(404, b"")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.protocol_version = "HTTP/1.0"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_a_loopback_url_is_fetched_only_when_private_addresses_are_allowed(port):
    url = f"http://localhost:{port}/audio"
    with pytest.raises(RefAudioError, match="^ref_audio_url host 'localhost' resolves to"):
        await fetch_url(url, allow_private=False)
    Handler.hosts.clear()
    assert await fetch_url(url, allow_private=True) == AUDIO
    assert Handler.hosts == [f"localhost:{port}"]  # connected to the checked address, asked for the name


async def test_a_trusted_origin_may_be_private_and_only_that_origin(port):
    assert await fetch_url(f"http://localhost:{port}/audio", False, {("http", "localhost", port)}) == AUDIO
    with pytest.raises(RefAudioError, match="resolves to"):
        await fetch_url(f"http://localhost:{port}/audio", False, {("http", "localhost", port + 1)})
    with pytest.raises(RefAudioError, match="resolves to"):
        await load_reference_audio(f"http://localhost:{port}/audio", False, {("http", "localhost", port + 1)})


async def test_redirects_are_followed_and_bounded(port):
    assert await fetch_url(f"http://127.0.0.1:{port}/redirect", allow_private=True) == AUDIO
    with pytest.raises(RefAudioError) as caught:
        await fetch_url(f"http://127.0.0.1:{port}/loop", allow_private=True)
    assert str(caught.value) == "ref_audio_url redirected more than 3 times"
    with pytest.raises(RefAudioError) as caught:
        await fetch_url(f"http://127.0.0.1:{port}/nothing", allow_private=True)
    assert str(caught.value) == f"fetching ref_audio_url http://127.0.0.1:{port}/nothing answered HTTP 404"


async def test_the_size_cap_exactly_the_limit_passes_and_one_byte_over_is_refused(port):
    base = f"http://127.0.0.1:{port}"
    assert len(await fetch_url(f"{base}/exactly-the-limit", allow_private=True)) == MAX_REF_AUDIO_BYTES
    with pytest.raises(RefAudioError) as caught:
        await fetch_url(f"{base}/one-byte-over", allow_private=True)
    assert str(caught.value) == (
        f"reference audio at {base}/one-byte-over exceeds the limit of {MAX_REF_AUDIO_BYTES} bytes"
    )
    with pytest.raises(RefAudioError) as caught:
        await fetch_url(f"{base}/declared-too-big", allow_private=True)
    assert str(caught.value) == (
        f"reference audio at {base}/declared-too-big is {MAX_REF_AUDIO_BYTES + 1} bytes; the limit is {MAX_REF_AUDIO_BYTES}"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/a.wav", "ref_audio_url must be an http(s) URL, got 'ftp://127.0.0.1/a.wav'"),
        ("http:///a.wav", "ref_audio_url must be an http(s) URL, got 'http:///a.wav'"),
        ("http://127.0.0.1:99999/a.wav", "ref_audio_url has an invalid port: 'http://127.0.0.1:99999/a.wav'"),
    ],
)
async def test_what_is_not_an_http_url_is_refused_before_connecting(url, message):
    with pytest.raises(RefAudioError) as caught:
        await fetch_url(url, allow_private=True)
    assert str(caught.value) == message
