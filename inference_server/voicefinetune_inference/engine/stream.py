"""One utterance as a stream of PCM chunks, produced while the engine is still generating its frames.

`synthesize_stream` is the blocking half (a worker thread): upstream builds the prompt, the fast engine's loop hands
each frame to an `IncrementalDecoder` on a thread of its own (`DecodeWorker`), and every finished chunk goes to
``emit`` from there, in order. With the model's
continuous loop (`scheduler`) the utterance is one row among others; without it, the utterance holds the model's
lock. Upstream's own whole-utterance decode at the end is skipped (the chunks already are the audio). A row's draws
follow from `utterance_seed`. ``should_stop`` is checked between frames: when it says so, the row stops.

`stream_chunks` is the asynchronous face; `Generator.stream` (generation.py) wraps it with the model cache and the
GPU slots: ``async for chunk in generator.stream(spec, item)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from voicefinetune.schemas import SAMPLE_RATE
from voicefinetune_inference.engine.tts_model import LoadedModel, SpeechItem, call_upstream, decode_replaced
from voicefinetune_inference.engine.urgency import Urgency


@dataclass
class StreamStats:
    first_chunk_seconds: float | None = None
    seconds: float = 0.0
    frames: int = 0
    samples: int = 0
    chunks: int = 0


@contextlib.contextmanager
def _without_final_decode(tts: Any) -> Iterator[None]:
    """Upstream decodes the whole utterance after generating it; while streaming, that work would be thrown away."""
    tokenizer = tts.model.speech_tokenizer
    rate = int(tokenizer.get_output_sample_rate())
    with decode_replaced(tokenizer, lambda encoded: ([np.zeros(0, dtype=np.float32) for _ in encoded], rate)):
        yield


def _reference_codes(loaded: LoadedModel, item: SpeechItem) -> Any:
    """Voice clone (in-context mode): upstream decodes the reference codes before the new ones; so does the stream."""
    prompt = item.clone_prompt
    if loaded.kind != "base" or prompt is None:
        return None
    return getattr(prompt, "ref_code", None)


def synthesize_stream(
    loaded: LoadedModel,
    item: SpeechItem,
    *,
    emit: Callable[[np.ndarray], None],
    should_stop: Callable[[], bool] | None = None,
    context_frames: int | None = None,
    urgency: Urgency | None = None,
) -> StreamStats:
    """(worker thread) Generate ``item`` and hand its waveform to ``emit`` chunk by chunk (float32, 24 kHz)."""
    from voicefinetune_inference.engine import fast_engine
    from voicefinetune_inference.engine.codec_stream import DecodeWorker, IncrementalDecoder

    stats = StreamStats()
    started = time.monotonic()

    def send(chunk: np.ndarray) -> None:
        if stats.first_chunk_seconds is None:
            stats.first_chunk_seconds = time.monotonic() - started
        stats.chunks += 1
        stats.samples += len(chunk)
        emit(chunk)

    # The same utterance of the same voice sounds the same every time it is streamed (sentence by sentence).
    seed = utterance_seed(loaded, item) if item.seed is None else item.seed
    if loaded.engine != "fast":  # upstream's loop has no frames to hand out: the whole utterance is one chunk
        import torch

        with loaded.lock:
            torch.manual_seed(seed)
            wavs, rate = call_upstream(loaded, [item])
        if int(rate) != SAMPLE_RATE:
            raise RuntimeError(f"the model speaks at {rate} Hz, streaming needs {SAMPLE_RATE} Hz")
        send(np.asarray(wavs[0], dtype=np.float32))
        stats.frames = len(wavs[0]) // int(loaded.tts.model.speech_tokenizer.get_decode_upsample_rate())
        stats.seconds = time.monotonic() - started
        return stats
    decoder = IncrementalDecoder(
        loaded.tts.model.speech_tokenizer.model.decoder,
        prefix=_reference_codes(loaded, item),
        context_frames=context_frames,
    )
    worker = DecodeWorker(decoder, send)  # the codec runs beside the generation loop, not in it

    def on_frame(step: int, rows: Any, codes: Any) -> None:
        stats.frames += 1
        worker.push(codes[0:1])

    options = fast_engine.CallOptions(
        frame_limits=[fast_engine.frame_bound(item.text)],
        on_frame=on_frame,
        should_stop=should_stop,
        seeds=[seed],
        urgency=urgency,
    )
    if loaded.decode_loop is not None:
        with fast_engine.routed(options), _without_final_decode(loaded.tts):
            call_upstream(loaded, [item])
    else:
        import torch

        with loaded.lock:  # the one-call loop draws from torch's own generator
            torch.manual_seed(seed)
            with fast_engine.substituted(loaded.tts.model, options), _without_final_decode(loaded.tts):
                call_upstream(loaded, [item])
    worker.finish()
    stats.seconds = time.monotonic() - started
    return stats


def utterance_seed(loaded: LoadedModel, item: SpeechItem) -> int:
    """A sampling seed fixed by the model and what is said, how and by whom (not by the clone prompt's object)."""
    what = "\x1f".join((loaded.path, item.text, item.language, item.instruct, item.speaker or ""))
    return int.from_bytes(hashlib.sha256(what.encode()).digest()[:8], "little")


_END = object()


async def stream_chunks(
    loaded: LoadedModel, item: SpeechItem, *, pool: Executor, urgency: Urgency | None = None
) -> AsyncIterator[np.ndarray]:
    """Chunks of one utterance as they are decoded; runs `synthesize_stream` on ``pool``. Closing the iterator
    early (or cancelling its consumer) stops generation at the next frame and waits until the model is free.
    ``urgency``: with the continuous loop, whether a consumer waits on the utterance yet (`urgency.Urgency`)."""
    from voicefinetune_inference import metrics

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def emit(chunk: np.ndarray) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, chunk)

    work = loop.run_in_executor(
        pool,
        functools.partial(
            synthesize_stream, loaded, item, emit=emit, should_stop=stop.is_set, urgency=urgency
        ),
    )
    work.add_done_callback(lambda _: queue.put_nowait(_END))
    try:
        while (chunk := await queue.get()) is not _END:
            yield chunk
        stats: StreamStats = await work
        metrics.observe_engine(
            engine=loaded.engine,
            mode="stream",
            first_audio=stats.first_chunk_seconds or stats.seconds,
            seconds=stats.seconds,
            audio_seconds=stats.samples / SAMPLE_RATE,
            frames=stats.frames,
        )
    finally:
        stop.set()
        if not work.done():
            with contextlib.suppress(BaseException):  # GenerationCancelled, or a second cancellation
                await asyncio.shield(work)
