"""The one host check of server-side requests (reference audio and webhooks): resolve, refuse if any address is
refused, and say so in the caller's words and error."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from voicefinetune.url_safety import resolve_checked

UNRESOLVABLE = "nowhere.invalid"  # RFC 2606: the .invalid TLD never resolves


class CallersError(ValueError):
    """Stands for a caller's own kind of bad input (RefAudioError, InvalidInput)."""


async def test_a_refused_address_raises_the_callers_error_naming_its_field_and_how_to_allow_it():
    with pytest.raises(CallersError) as refused:
        await resolve_checked(
            "127.0.0.1", 80, False, field="hook_url", how_to_allow="ask nicely", error=CallersError
        )
    assert str(refused.value) == (
        "hook_url host '127.0.0.1' resolves to 127.0.0.1, a loopback address: refused (ask nicely)"
    )


async def test_a_name_that_does_not_resolve_raises_the_callers_error_from_the_resolver_error():
    with pytest.raises(CallersError) as refused:
        await resolve_checked(UNRESOLVABLE, 80, False, field="hook_url", how_to_allow="-", error=CallersError)
    assert isinstance(refused.value.__cause__, socket.gaierror)
    assert str(refused.value) == f"hook_url host {UNRESOLVABLE!r} does not resolve: {refused.value.__cause__}"


async def test_an_allowed_host_gives_the_address_to_connect_to():
    address = await resolve_checked(
        "127.0.0.1", 80, True, field="hook_url", how_to_allow="-", error=CallersError
    )
    assert address == ipaddress.ip_address("127.0.0.1")
