"""A reference URL that Python cannot even split (an IPv4 address in brackets, an unclosed IPv6 bracket) is the
caller's mistake: a 400 naming ref_audio_url on both clone endpoints, not a 500."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

MALFORMED = ["http://[127.0.0.1]/x", "http://[::1"]


def _why(url: str) -> str:
    with pytest.raises(ValueError) as refused:
        urlsplit(url)
    return str(refused.value)


@pytest.mark.parametrize("url", MALFORMED)
@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/voice-clone", {"text": "Hello there.", "ref_text": "The reference."}),
        (
            "/voice-clone/batch",
            {"items": [{"text": "Hello there.", "filename": "a.wav"}], "ref_text": "The reference."},
        ),
    ],
)
async def test_a_malformed_reference_url_is_a_400_naming_the_field(
    make_service, kit, url, route, body
) -> None:
    service = await make_service()
    async with kit.http_client(service) as client:
        answer = await client.post(route, json={**body, "ref_audio_url": url})
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"detail": f"ref_audio_url {url!r} is not a valid URL: {_why(url)}"}
    assert service.cloner.clone_prompts == 0 and service.cache.total_loads == 0
