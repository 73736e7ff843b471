"""Streamed speech: sentences in, encoded audio bytes out as they are generated.

Each sentence's audio comes from a chunk source (an async stream of float32 24 kHz chunks per utterance: the
engine's, ``Generator.stream``; cancelling it stops that utterance's generation). Sentence ``i + 1`` starts
generating while sentence ``i`` is being sent (``lookahead``): look-ahead work, which the model's decode loop admits
only while no urgent request waits, until the consumer reaches it (`Urgency`). Chunks pass through the optional
pitch-preserving time stretch and the incremental encoder, and bytes leave as soon as the encoder emits them. When
the consumer goes away (the client disconnected) every sentence still generating is cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from voicefinetune.opslog import OpsLog
from voicefinetune.schemas import SAMPLE_RATE
from voicefinetune_inference.activity import RequestActivity
from voicefinetune_inference.audio.encoding import make_encoder
from voicefinetune_inference.audio.time_stretch import TimeStretch
from voicefinetune_inference.caches.model_cache import ModelSpec
from voicefinetune_inference.engine import tts_model
from voicefinetune_inference.engine.urgency import Urgency
from voicefinetune_inference.openai_api import stream_metrics


class ChunkSource(Protocol):
    def __call__(
        self, spec: ModelSpec, item: tts_model.SpeechItem, *, urgency: Urgency
    ) -> AsyncIterator[np.ndarray]: ...


FRAMES_PER_SECOND = 12.5


@dataclass(frozen=True)
class StreamRequest:
    spec: ModelSpec
    items: list[tts_model.SpeechItem]  # one per sentence, in order
    response_format: str
    speed: float = 1.0
    voice: str = ""
    job_id: str | None = None


@dataclass
class StreamOutcome:
    """What one response stream did; recorded in the ops log as ``inference_stream``."""

    sentences: int = 0
    sentences_started: int = 0
    sentences_done: int = 0
    audio_seconds: float = 0.0  # generated
    output_seconds: float = 0.0  # sent, after the speed change
    bytes: int = 0
    first_audio_seconds: float | None = None
    result: str = "completed"
    details: dict[str, Any] = field(default_factory=dict)


class _End:
    pass


@dataclass
class _Failed:
    error: BaseException


class SpeechStreamer:
    def __init__(self, source: ChunkSource, *, activity: RequestActivity, opslog: OpsLog, lookahead: int = 1):
        self.source = source
        self.activity = activity
        self.opslog = opslog
        self.lookahead = max(0, lookahead)

    async def waveform(
        self, request: StreamRequest, outcome: StreamOutcome
    ) -> AsyncGenerator[np.ndarray, None]:
        """The response's audio chunks in order; the next sentence generates while this one is consumed."""
        queues: list[asyncio.Queue] = []
        tasks: list[asyncio.Task] = []
        urgencies: list[Urgency] = []
        outcome.sentences = len(request.items)

        async def produce(item: tts_model.SpeechItem, queue: asyncio.Queue, urgency: Urgency) -> None:
            outcome.sentences_started += 1
            try:
                async for chunk in self.source(request.spec, item, urgency=urgency):
                    queue.put_nowait(np.asarray(chunk, dtype=np.float32).reshape(-1))
                queue.put_nowait(_End())
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                queue.put_nowait(_Failed(exc))

        def start_next() -> None:
            queue: asyncio.Queue = asyncio.Queue()
            queues.append(queue)
            urgencies.append(Urgency(urgent=False))
            tasks.append(asyncio.ensure_future(produce(request.items[len(tasks)], queue, urgencies[-1])))

        try:
            for index in range(len(request.items)):
                while len(tasks) < min(len(request.items), index + 1 + self.lookahead):
                    start_next()
                urgencies[index].promote()  # the consumer waits on this sentence now
                while True:
                    chunk = await queues[index].get()
                    if isinstance(chunk, _End):
                        break
                    if isinstance(chunk, _Failed):
                        raise chunk.error
                    outcome.audio_seconds += chunk.size / SAMPLE_RATE
                    yield chunk
                outcome.sentences_done += 1
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def encoded(self, request: StreamRequest, outcome: StreamOutcome) -> AsyncGenerator[bytes, None]:
        """The response file's bytes (``request.response_format``) as the encoder emits them."""
        encoder = make_encoder(request.response_format)
        stretch = TimeStretch(request.speed) if abs(request.speed - 1.0) > 1e-6 else None

        def out(samples: np.ndarray) -> bytes:
            outcome.output_seconds += samples.size / SAMPLE_RATE
            return encoder.encode(samples)

        async for chunk in self.waveform(request, outcome):
            data = out(stretch.push(chunk) if stretch else chunk)
            if data:
                yield data
        tail = (out(stretch.flush()) if stretch else b"") + encoder.finish()
        if tail:
            yield tail

    async def sse(self, request: StreamRequest, outcome: StreamOutcome) -> AsyncGenerator[bytes, None]:
        """OpenAI's server-sent events: ``speech.audio.delta`` (base64 of the format's bytes), then
        ``speech.audio.done`` with usage."""
        async for data in self.encoded(request, outcome):
            yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
        characters = sum(len(item.text) for item in request.items)
        frames = round(outcome.audio_seconds * FRAMES_PER_SECOND)
        usage = {"input_tokens": characters, "output_tokens": frames, "total_tokens": characters + frames}
        yield _event({"type": "speech.audio.done", "usage": usage})

    async def respond(
        self, request: StreamRequest, *, stream_format: str = "audio", started: float | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The response body: counted in the request activity, measured (metrics), recorded in the ops log."""
        started = time.monotonic() if started is None else started
        outcome = StreamOutcome()
        body = self.sse(request, outcome) if stream_format == "sse" else self.encoded(request, outcome)
        self.activity.total_requests += 1
        self.activity.in_flight += 1
        try:
            async for data in body:
                if outcome.first_audio_seconds is None:
                    outcome.first_audio_seconds = time.monotonic() - started
                    stream_metrics.FIRST_AUDIO_SECONDS.labels(request.response_format).observe(
                        outcome.first_audio_seconds
                    )
                outcome.bytes += len(data)
                stream_metrics.STREAMED_BYTES.labels(request.response_format).inc(len(data))
                yield data
        except (asyncio.CancelledError, GeneratorExit):
            outcome.result = "disconnected"
            raise
        except BaseException as exc:
            outcome.result = "failed"
            outcome.details["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            await body.aclose()
            self.activity.in_flight -= 1
            self.activity.last_activity = time.monotonic()
            self._record(request, outcome, time.monotonic() - started)

    def _record(self, request: StreamRequest, outcome: StreamOutcome, seconds: float) -> None:
        stream_metrics.STREAMS.labels(outcome.result).inc()
        if outcome.audio_seconds and seconds > 0:
            stream_metrics.REAL_TIME_FACTOR.observe(outcome.audio_seconds / seconds)
        self.opslog.record(
            "inference_stream",
            seconds,
            request.job_id,
            ok=outcome.result == "completed",
            result=outcome.result,
            voice=request.voice,
            format=request.response_format,
            speed=request.speed,
            sentences=outcome.sentences,
            sentences_started=outcome.sentences_started,
            sentences_done=outcome.sentences_done,
            first_audio_seconds=None
            if outcome.first_audio_seconds is None
            else round(outcome.first_audio_seconds, 4),
            audio_seconds=round(outcome.audio_seconds, 4),
            output_seconds=round(outcome.output_seconds, 4),
            bytes=outcome.bytes,
            **outcome.details,
        )


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()
