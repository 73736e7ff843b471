"""The OpenAI-compatible API behind VFT_API_KEY: the official client's api_key is the key."""

from __future__ import annotations

import openai
import pytest


def client_for(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


@pytest.mark.parametrize("key", ["wrong", "k2", ""])
def test_a_wrong_key_is_401(served_with_key, key):
    client = client_for(served_with_key, key or "-")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.audio.speech.create(model="qwen3-tts", voice="alloy", input="Hello.")
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key" and caught.value.body["message"]
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_the_right_key_speaks(served_with_key):
    client = client_for(served_with_key, "k")
    assert "qwen3-tts" in {model.id for model in client.models.list()}
    response = client.audio.speech.create(
        model="qwen3-tts", voice="alloy", input="Hello.", response_format="wav"
    )
    assert response.content[:4] == b"RIFF"
