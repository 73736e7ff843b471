"""VFT_ENGINE through the real service: /gpu/status names the engine, both engines answer the seed endpoints alike,
the engine metrics appear, a stream comes out of the service's generator, and a wrong value stops the server."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from prometheus_client import REGISTRY
from voicefinetune_inference.engine import tts_model

from voicefinetune.settings import Settings

from .conftest import http_client, read_wav


def test_the_setting_defaults_to_fast_and_reads_vft_engine():
    assert Settings.from_env({}).engine == "fast"
    assert Settings.from_env({"VFT_ENGINE": " Upstream "}).engine == "upstream"


@pytest.mark.parametrize("engine", ["fast", "upstream"])
async def test_seed_endpoint_and_status_through_each_engine(make_service, engine):
    service = await make_service(engine=engine)
    async with http_client(service) as client:
        status = (await client.get("/gpu/status")).json()
        assert status["engine"] == engine
        answer = await client.post(
            "/voice-design", json={"text": "Welcome home.", "instruct": "A warm voice"}
        )
        assert answer.status_code == 200 and answer.headers["content-type"] == "audio/wav"
        audio, rate = read_wav(answer.content)
        assert rate == 24000 and audio.ndim == 1 and len(audio) > 0 and len(audio) % 1920 == 0
        metrics = (await client.get("/metrics")).text
    for name in ("engine_time_to_first_audio_seconds", "engine_real_time_factor", "engine_frames_per_second"):
        assert f'vft_inference_{name}_count{{engine="{engine}",mode="batch"}}' in metrics


async def test_the_service_streams_one_utterance(make_service):
    service = await make_service()
    spec = await service.speech.loader.shared_spec("voice_design")
    item = tts_model.SpeechItem("Streamed words.", "english", instruct="A calm voice.")
    labels = {"engine": "fast", "mode": "stream"}
    before = REGISTRY.get_sample_value("vft_inference_engine_time_to_first_audio_seconds_count", labels) or 0
    chunks = [chunk async for chunk in service.generator.stream(spec, item)]
    assert (
        REGISTRY.get_sample_value("vft_inference_engine_time_to_first_audio_seconds_count", labels)
        == before + 1
    )
    assert [len(c) // 1920 for c in chunks][:1] == [1]
    assert all(c.dtype == np.float32 for c in chunks)
    total = sum(len(c) for c in chunks)
    assert total > 0 and total % 1920 == 0
    (entry,) = service.cache.loaded()
    assert entry.model.engine == "fast" and not entry.model.lock.locked()


def test_a_wrong_engine_stops_the_server_at_start(settings):
    """The settings refuse it, whichever way they are made: from the environment (`vft inference`, `vft serve`) or
    from other settings (nothing below them checks again)."""
    with pytest.raises(ValueError, match="VFT_ENGINE='turbo' is not one of: fast, upstream"):
        Settings.from_env({"VFT_ENGINE": " Turbo "})
    with pytest.raises(ValueError, match="VFT_ENGINE='turbo' is not one of: fast, upstream"):
        dataclasses.replace(settings, engine="turbo")
