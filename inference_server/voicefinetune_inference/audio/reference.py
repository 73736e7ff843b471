"""Reference audio for voice cloning: an http(s) URL, a ``data:`` URL or plain base64.

URLs are fetched defensively (server-side request forgery): the host is resolved first and every address it
resolves to must be public (`voicefinetune.url_safety`, the policy webhooks share) unless ``allow_private_urls`` is
set; the connection then goes to the checked address (no second lookup an attacker could rebind), redirects are re-checked hop by hop, and size and time are bounded.
Private addresses are allowed with ``VFT_ALLOW_PRIVATE_URLS=1``, or only for the origins listed in
``VFT_TRUSTED_URL_ORIGINS`` (e.g. an in-cluster S3 endpoint). Cloud metadata addresses are refused even then.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Collection
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx
import numpy as np

from voicefinetune import url_safety
from voicefinetune.url_safety import IPAddress, Origin, url_origin
from voicefinetune_inference.audio.wav import NotAudio, decode_audio
from voicefinetune_inference.errors import RefAudioError

MAX_REF_AUDIO_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT_SECONDS = 15.0
MAX_REDIRECTS = 3
HOW_TO_ALLOW = (
    "give a public URL, base64 or a data: URL; to allow private and loopback hosts set VFT_ALLOW_PRIVATE_URLS=1, "
    "or list trusted origins in VFT_TRUSTED_URL_ORIGINS (e.g. http://127.0.0.1:9000)"
)


def split_url(url: str) -> SplitResult:
    """``urlsplit`` of a URL from a request: a malformed one (e.g. ``http://[::1``, an IPv4 address in brackets)
    is the caller's error, not ours."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise RefAudioError(f"ref_audio_url {url!r} is not a valid URL: {exc}") from exc


async def resolve_checked(host: str, port: int, allow_private: bool) -> IPAddress:
    """Resolve ``host`` and return an address to connect to, refusing the host if ANY of its addresses is."""
    return await url_safety.resolve_checked(
        host, port, allow_private, field="ref_audio_url", how_to_allow=HOW_TO_ALLOW, error=RefAudioError
    )


def _pinned_url(parts, address: IPAddress) -> str:
    host = f"[{address}]" if address.version == 6 else str(address)
    port = f":{parts.port}" if parts.port else ""
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{host}{port}{path}{query}"


async def _read_limited(response: httpx.Response, url: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_REF_AUDIO_BYTES:
        raise RefAudioError(
            f"reference audio at {url} is {declared} bytes; the limit is {MAX_REF_AUDIO_BYTES}"
        )
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > MAX_REF_AUDIO_BYTES:
            raise RefAudioError(f"reference audio at {url} exceeds the limit of {MAX_REF_AUDIO_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_url(url: str, allow_private: bool, trusted_origins: Collection[Origin] = ()) -> bytes:
    async with httpx.AsyncClient(
        follow_redirects=False, trust_env=False, timeout=FETCH_TIMEOUT_SECONDS
    ) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            parts = split_url(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise RefAudioError(f"ref_audio_url must be an http(s) URL, got {url!r}")
            origin = url_origin(parts)
            if origin is None:
                raise RefAudioError(f"ref_audio_url has an invalid port: {url!r}")
            trusted = allow_private or origin in trusted_origins  # checked again on every redirect hop
            address = await resolve_checked(parts.hostname, origin[2], trusted)
            host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
            extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
            request = client.build_request(
                "GET", _pinned_url(parts, address), headers={"Host": host_header}, extensions=extensions
            )
            response = await client.send(request, stream=True)
            try:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise RefAudioError(f"fetching ref_audio_url {url} answered HTTP {response.status_code}")
                return await _read_limited(response, url)
            finally:
                await response.aclose()
    raise RefAudioError(f"ref_audio_url redirected more than {MAX_REDIRECTS} times")


def decode_base64(payload: str) -> bytes:
    compact = "".join(payload.split())
    if len(compact) * 3 // 4 > MAX_REF_AUDIO_BYTES:
        raise RefAudioError(f"base64 reference audio exceeds the limit of {MAX_REF_AUDIO_BYTES} bytes")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RefAudioError(
            "ref_audio_url is neither an http(s) URL, a data: URL nor valid base64 audio"
        ) from exc


def decode_data_url(value: str) -> bytes:
    header, _, payload = value.partition(",")
    if not header.endswith(";base64"):
        raise RefAudioError("a data: ref_audio_url must be base64 encoded (data:audio/wav;base64,...)")
    return decode_base64(payload)


async def load_reference_audio(
    value: str, allow_private: bool, trusted_origins: Collection[Origin] = ()
) -> tuple[np.ndarray, int]:
    """(mono float32 waveform, sample rate) of the reference audio named by ``value``; URLs of
    ``trusted_origins`` may point at private addresses."""
    value = value.strip()
    if not value:
        raise RefAudioError("ref_audio_url must not be empty")
    scheme = split_url(value).scheme.lower() if "://" in value or value.startswith("data:") else ""
    if scheme == "data":
        data = decode_data_url(value)
    elif scheme in ("http", "https"):
        try:
            data = await asyncio.wait_for(
                fetch_url(value, allow_private, trusted_origins), FETCH_TIMEOUT_SECONDS
            )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise RefAudioError(
                f"fetching ref_audio_url timed out after {FETCH_TIMEOUT_SECONDS:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise RefAudioError(f"could not fetch ref_audio_url: {exc}") from exc
    elif scheme:
        raise RefAudioError(f"ref_audio_url scheme {scheme!r} is not supported: use http(s), data: or base64")
    else:
        data = decode_base64(value)
    try:
        return await asyncio.to_thread(decode_audio, data)
    except NotAudio as exc:
        raise RefAudioError(str(exc)) from exc
