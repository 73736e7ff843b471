"""The SSRF guard judges IPv4 addresses wrapped in IPv6 (6to4, NAT64, Teredo) as the IPv4 address they reach."""

from __future__ import annotations

import ipaddress

import pytest
from voicefinetune_inference.audio.reference import RefAudioError, resolve_checked

from voicefinetune.url_safety import address_refusal

WRAPPED = {
    "2002:7f00:1::": "a loopback address",  # 6to4 of 127.0.0.1
    "2002:a00:1::1": "a private address",  # 6to4 of 10.0.0.1
    "64:ff9b::7f00:1": "a loopback address",  # NAT64 of 127.0.0.1
    "64:ff9b::c0a8:1": "a private address",  # NAT64 of 192.168.0.1
    "64:ff9b::a9fe:a9fe": "a cloud metadata address",  # NAT64 of 169.254.169.254
    "2002:a9fe:a9fe::": "a cloud metadata address",  # 6to4 of 169.254.169.254
}


@pytest.mark.parametrize(("address", "reason"), WRAPPED.items())
def test_wrapped_non_public_addresses_are_refused(address, reason):
    assert address_refusal(ipaddress.ip_address(address), allow_private=False) == reason


def test_wrapped_metadata_is_refused_even_with_private_urls_allowed():
    assert (
        address_refusal(ipaddress.ip_address("64:ff9b::a9fe:a9fe"), allow_private=True)
        == "a cloud metadata address"
    )


def test_wrapped_public_addresses_pass():
    assert address_refusal(ipaddress.ip_address("64:ff9b::808:808"), allow_private=False) is None  # 8.8.8.8


async def test_a_literal_6to4_host_is_refused_before_connecting():
    with pytest.raises(RefAudioError, match="loopback"):
        await resolve_checked("2002:7f00:1::", 80, allow_private=False)
