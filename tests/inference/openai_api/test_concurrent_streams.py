"""Concurrent streams share their model's continuous decode loop instead of taking turns per sentence: with 8 streams
of 3 sentences on one voice, every stream's first audio arrives before any stream's third sentence is done. With a
slot for every sentence under way (8 streams, each generating its next sentence ahead: 16), it even arrives before
any stream's first sentence is done, which turns per sentence (``VFT_SCHEDULER=batch``) cannot do. A stream's
next sentence, generated ahead while it sends one, never takes the slot a later stream's first sentence waits for."""

from __future__ import annotations

import asyncio
import contextlib
import threading
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


async def test_a_streams_next_sentence_waits_as_look_ahead_and_a_later_streams_first_as_urgent(
    make_service, tiny_models, kit
):
    """One slot, the loop held before its next frame: X's first sentence holds the slot, X's second waits as
    look-ahead and Y's first, asked later, waits as urgent, so the loop admits Y's before X's second
    (tests/inference/engine/test_continuous.py steps that choice); once let go, every sentence is spoken."""
    service = await make_service(engine_slots=1)
    await kit.add_voice(service, tiny_models, job_id="hero")
    spec = service.speech.loader.voice_spec(service.catalog.get("hero"))
    streamer = SpeechStreamer(service.generator.stream, activity=service.activity, opslog=service.opslog)
    go = threading.Event()

    async def stream(name: str, sentences: int) -> int:
        items = [
            tts_model.SpeechItem(f"{name} line {n}.", "english", speaker=TINY_SPEAKER)
            for n in range(sentences)
        ]
        outcome = StreamOutcome()
        async for _ in streamer.waveform(StreamRequest(spec, items, "pcm"), outcome):
            pass
        return outcome.sentences_done

    await stream("W", 1)  # loads the model and starts its decode loop
    async with service.cache.use(spec) as loaded:
        loop = loaded.decode_loop

    @contextlib.contextmanager
    def held():
        go.wait(timeout=50)
        yield

    async def until(condition, what: str) -> None:
        deadline = time.monotonic() + 50
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {loop.status()}"
            await asyncio.sleep(0.01)

    def waiting(running: int, queued: int, look_ahead: int):
        status = loop.status()
        return (status["rows_running"], status["queue"], status["queue_look_ahead"]) == (
            running,
            queued,
            look_ahead,
        )

    loop.step_context = held
    try:
        x = asyncio.ensure_future(stream("X", 2))
        await until(lambda: waiting(1, 1, 1), "X's first sentence running, its second waiting as look-ahead")
        y = asyncio.ensure_future(stream("Y", 1))
        await until(lambda: waiting(1, 2, 1), "Y's first sentence waiting as urgent")
    finally:
        go.set()
    assert await asyncio.wait_for(asyncio.gather(x, y), timeout=50) == [2, 1]
