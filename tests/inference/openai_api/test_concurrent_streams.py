"""Concurrent streams share their model's continuous decode loop instead of taking turns per sentence: with 8 streams
of 3 sentences on one voice, every stream's first audio arrives before any stream's third sentence is done. With a
slot for every sentence under way (8 streams, each generating its next sentence ahead: 16), it even arrives before
any stream's first sentence is done, which turns per sentence (``VFT_SCHEDULER=batch``) cannot do."""

from __future__ import annotations

import asyncio
import time

from voicefinetune_inference.engine import tts_model
from voicefinetune_inference.openai_api.streaming import SpeechStreamer, StreamOutcome, StreamRequest

from ..conftest import TINY_SPEAKER

STREAMS = 8
SENTENCES = 3


async def test_eight_streams_all_start_before_any_third_sentence_is_done(make_service, tiny_models, kit):
    service = await make_service(engine_slots=2 * STREAMS)
    await kit.add_voice(service, tiny_models, job_id="hero")
    spec = service.speech.loader.voice_spec(service.catalog.get("hero"))
    streamer = SpeechStreamer(service.generator.stream, activity=service.activity, opslog=service.opslog)
    first_audio: dict[int, float] = {}
    first_done: dict[int, float] = {}
    third_done: dict[int, float] = {}

    async def stream(index: int) -> None:
        items = [
            tts_model.SpeechItem(f"Hi {index}{n}.", "english", speaker=TINY_SPEAKER) for n in range(SENTENCES)
        ]
        outcome = StreamOutcome()
        async for _ in streamer.waveform(StreamRequest(spec, items, "pcm"), outcome):
            first_audio.setdefault(index, time.monotonic())
            if outcome.sentences_done:
                first_done.setdefault(index, time.monotonic())
        assert outcome.sentences_done == SENTENCES
        third_done[index] = time.monotonic()

    await asyncio.wait_for(asyncio.gather(*(stream(i) for i in range(STREAMS))), timeout=50)
    assert len(first_audio) == len(third_done) == STREAMS
    assert max(first_audio.values()) < min(third_done.values())
    assert max(first_audio.values()) < min(first_done.values())
