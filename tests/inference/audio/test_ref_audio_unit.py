"""The SSRF guard's address rules and the reference-audio decoders."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from voicefinetune_inference.audio.reference import RefAudioError, load_reference_audio, resolve_checked

from voicefinetune.url_safety import address_refusal


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.0.1",
        "169.254.169.254",
        "169.254.1.1",
        "fe80::1",
        "fd00:ec2::254",
        "100.64.0.1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "240.0.0.1",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert address_refusal(ipaddress.ip_address(address), allow_private=False) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert address_refusal(ipaddress.ip_address(address), allow_private=False) is None


def test_allow_private_still_refuses_cloud_metadata():
    assert address_refusal(ipaddress.ip_address("10.0.0.1"), allow_private=True) is None
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allow_private=True) is None
    assert "metadata" in address_refusal(ipaddress.ip_address("169.254.169.254"), allow_private=True)


async def test_resolution_happens_before_any_connection():
    with pytest.raises(RefAudioError, match="private"):
        await resolve_checked("10.0.0.1", 80, allow_private=False)
    with pytest.raises(RefAudioError, match="loopback"):
        await resolve_checked("localhost", 80, allow_private=False)


async def test_base64_and_data_urls_decode(kit):
    wav = kit.reference_wav(seconds=0.5, rate=16000)
    encoded = base64.b64encode(wav).decode()
    for value in (encoded, f"data:audio/wav;base64,{encoded}", encoded[:40] + "\n" + encoded[40:]):
        audio, rate = await load_reference_audio(value, allow_private=False)
        assert rate == 16000 and audio.shape == (8000,)
    with pytest.raises(RefAudioError, match="base64"):
        await load_reference_audio("data:audio/wav,RIFF", allow_private=False)
    with pytest.raises(RefAudioError):
        await load_reference_audio("%%%not base64%%%", allow_private=False)
    with pytest.raises(RefAudioError, match="empty"):
        await load_reference_audio("  ", allow_private=False)
