"""Reference-audio fetches over https and to names that do not resolve: the pinned connection still names the host
in TLS (SNI), an https origin defaults to port 443, and a name that resolves nowhere is the caller's error."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from voicefinetune_inference.audio.reference import fetch_url, resolve_checked, url_origin
from voicefinetune_inference.errors import RefAudioError

UNRESOLVABLE = "nowhere.invalid"  # RFC 2606: the .invalid TLD never resolves


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_an_https_fetch_names_the_host_in_tls_although_it_connects_to_the_checked_address(tmp_path):
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _context: names.append(name)
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        # The client trusts the system's CAs only, so the handshake ends at the certificate; the server has
        # seen the name the client asked for by then.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await asyncio.wait_for(fetch_url(f"https://localhost:{port}/ref.wav", allow_private=True), 30)
    finally:
        server.close()
        await server.wait_closed()
    assert names == ["localhost"]


def test_an_https_origin_without_a_port_is_port_443():
    assert url_origin("https://Example.com/ref.wav") == ("https", "example.com", 443)
    assert url_origin("http://Example.com/ref.wav") == ("http", "example.com", 80)


async def test_a_name_that_does_not_resolve_is_refused_with_the_resolver_error():
    with pytest.raises(RefAudioError) as refused:
        await resolve_checked(UNRESOLVABLE, 80, allow_private=False)
    assert str(refused.value).startswith(f"ref_audio_url host {UNRESOLVABLE!r} does not resolve: ")
    assert isinstance(refused.value.__cause__, socket.gaierror)
    assert (
        str(refused.value)
        == f"ref_audio_url host {UNRESOLVABLE!r} does not resolve: {refused.value.__cause__}"
    )
