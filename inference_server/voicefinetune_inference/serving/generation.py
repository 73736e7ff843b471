"""Turning utterances into audio: fused generate calls on the GPU threads, then WAV bytes, inline or on S3."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from voicefinetune.schemas import BatchItemError, InferS3Response, InlineAudioResponse
from voicefinetune.settings import Settings
from voicefinetune_inference import metrics
from voicefinetune_inference.audio.wav import duration_seconds, to_wav_bytes
from voicefinetune_inference.caches.model_cache import ModelCache, ModelSpec
from voicefinetune_inference.engine import batch as engine_batch
from voicefinetune_inference.engine import stream as engine_stream
from voicefinetune_inference.engine import tts_model
from voicefinetune_inference.engine.urgency import Urgency
from voicefinetune_inference.errors import message_for, status_for
from voicefinetune_inference.serving.batcher import Batcher
from voicefinetune_inference.serving.outputs import AudioOutputs, inline_audio

log = logging.getLogger(__name__)
SAMPLES_PER_FRAME = 1920  # one 80 ms codec frame at 24 kHz

Result = InferS3Response | InlineAudioResponse | BatchItemError


@dataclass(frozen=True)
class _Work:
    """One utterance queued for fusion with others of the same model."""

    spec: ModelSpec
    item: tts_model.SpeechItem


@dataclass
class Planned:
    """A batch item that passed its checks: what to say and where it goes."""

    index: int
    text: str
    language: str
    instruct: str
    filename: str
    key: str | None
    seed: int | None = None


def limit_cpu_threads(settings: Settings) -> None:
    """On CPU, generate calls run in parallel threads: give each a share of the cores rather than letting
    every call spin up one thread per core (oversubscription makes tiny models ~8x slower)."""
    from voicefinetune.qwen import choose_runtime

    if choose_runtime(settings).on_gpu or "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, settings.gpu_max_concurrency)))


class Generator:
    def __init__(self, settings: Settings, cache: ModelCache, outputs: AudioOutputs):
        self.settings = settings
        self.cache = cache
        self.outputs = outputs
        self.batcher = Batcher(
            self._run_batch,
            settings.inference_batch_window_ms / 1000.0,
            settings.inference_max_batch,
            delivers=True,
        )
        self.gpu_slots = asyncio.Semaphore(max(1, settings.gpu_max_concurrency))
        # model calls get their own threads, so that uploads and S3 checks queued in the default pool never delay them
        self._gpu_pool = ThreadPoolExecutor(
            max(1, settings.gpu_max_concurrency), thread_name_prefix="vft-generate"
        )
        # VFT_SCHEDULER=continuous: a thread per request builds its prompt, waits for its rows and decodes its audio
        # while the model's decode loop runs every request's rows together
        self.continuous = settings.continuous
        self.generated = 0  # utterances generated, by either scheduler
        self._request_pool = ThreadPoolExecutor(
            max(32, 4 * settings.engine_slots_for(True)), thread_name_prefix="vft-request"
        )

    def shutdown(self) -> None:
        """Drop the GPU threads (close the batcher, then the cache, before this)."""
        self._gpu_pool.shutdown(wait=False, cancel_futures=True)
        self._request_pool.shutdown(wait=False, cancel_futures=True)

    def _with_loop(self, loaded: tts_model.LoadedModel, spec: ModelSpec) -> tts_model.LoadedModel:
        """The model's continuous decode loop, started with its first request (stopped when the model is released)."""
        if loaded.decode_loop is None and loaded.engine == "fast":
            from voicefinetune.qwen import choose_runtime
            from voicefinetune_inference.engine import fast_engine
            from voicefinetune_inference.engine.scheduler import DecodeLoop

            talker = loaded.tts.model.talker
            if fast_engine.supported(talker):
                slots = self.settings.engine_slots_for(choose_runtime(self.settings).on_gpu)
                loop = DecodeLoop(talker, slots=slots, name=spec.key, graphs=self.settings.cuda_graphs)
                fast_engine.attach(loaded.tts.model, loop)
                loaded.decode_loop = loop
        return loaded

    async def _generate_alone(self, spec: ModelSpec, item: tts_model.SpeechItem) -> np.ndarray:
        """(continuous) One utterance as one request of its model's decode loop."""
        async with self.cache.use(spec) as loaded:
            self._with_loop(loaded, spec)
            started = time.monotonic()
            (wav,) = await asyncio.get_running_loop().run_in_executor(
                self._request_pool, functools.partial(engine_batch.generate, loaded, [item])
            )
        elapsed = time.monotonic() - started
        self.generated += 1
        audio_seconds = duration_seconds(wav)
        metrics.ITEMS.labels(spec.kind).inc()
        metrics.AUDIO_SECONDS.labels(spec.kind).inc(audio_seconds)
        metrics.observe_engine(
            engine=loaded.engine,
            mode="batch",
            first_audio=elapsed,
            seconds=elapsed,
            audio_seconds=audio_seconds,
            frames=len(wav) // SAMPLES_PER_FRAME,
        )
        return wav

    async def _run_batch(
        self, key: str, work: list[_Work], *, deliver: Callable[[int, Any], None] | None = None
    ) -> list[np.ndarray | BaseException]:
        """The batcher's call: one generate for all queued items of one model (items alone if that fails). A row
        that ends before the rest of the batch (fast engine) goes to ``deliver`` at once; its final result is its
        early waveform again (the batcher drops it)."""
        spec = work[0].spec
        items = [w.item for w in work]
        loop = asyncio.get_running_loop()
        early: dict[int, np.ndarray] = {}
        first_ready: list[float] = []

        def ready(index: int, wav: np.ndarray) -> None:  # (GPU thread) a row ended early
            early[index] = wav
            first_ready.append(time.monotonic())
            if deliver is not None:
                loop.call_soon_threadsafe(deliver, index, wav)

        on_ready = ready if deliver is not None else None
        async with self.cache.use(spec) as loaded, self.gpu_slots:
            started = time.monotonic()
            try:
                wavs: list[Any] = await self.on_gpu(engine_batch.generate, loaded, items, on_ready=on_ready)
            except Exception as exc:
                if len(items) == 1:
                    raise
                log.warning(
                    "fused generate of %d items for %s failed (%s); retrying one by one", len(items), key, exc
                )
                wavs = []
                for index, item in enumerate(items):
                    if index in early:
                        wavs.append(early[index])
                        continue
                    try:
                        wavs.extend(await self.on_gpu(engine_batch.generate, loaded, [item]))
                    except Exception as item_exc:  # noqa: BLE001 - reported in that item's place
                        wavs.append(item_exc)
        elapsed = time.monotonic() - started
        wavs = [early.get(index, wav) for index, wav in enumerate(wavs)]
        metrics.BATCH_SIZE.observe(len(items))
        metrics.GENERATE_SECONDS.observe(elapsed)
        produced = [w for w in wavs if not isinstance(w, BaseException)]
        self.generated += len(produced)
        audio_seconds = sum(duration_seconds(w) for w in produced)
        metrics.ITEMS.labels(spec.kind).inc(len(produced))
        metrics.AUDIO_SECONDS.labels(spec.kind).inc(audio_seconds)
        metrics.observe_engine(
            engine=loaded.engine,
            mode="batch",
            first_audio=min(first_ready, default=started + elapsed) - started,
            seconds=elapsed,
            audio_seconds=audio_seconds,
            frames=sum(len(w) for w in produced) // SAMPLES_PER_FRAME,
        )
        return wavs

    async def stream(
        self, spec: ModelSpec, item: tts_model.SpeechItem, *, urgency: Urgency | None = None
    ) -> AsyncIterator[np.ndarray]:
        """One utterance as float32 PCM chunks at 24 kHz (1, 2, 4, then 8 frames of 1920 samples each, the last one
        shorter), produced while it is generated; joined, they are the utterance. Runs apart from the fusion
        batcher, holding its model's lock for the utterance. Leaving the ``async for`` early (closing the iterator,
        or cancelling its task) stops generation at the next frame and frees the model. With the continuous
        scheduler the utterance is one row of its model's decode loop instead, admitted before look-ahead work
        while ``urgency`` says a consumer waits on it (the default)."""
        if self.continuous:
            async with self.cache.use(spec) as loaded:
                self._with_loop(loaded, spec)
                chunks = engine_stream.stream_chunks(loaded, item, pool=self._request_pool, urgency=urgency)
                async for chunk in chunks:
                    yield chunk
            return
        async with self.cache.use(spec) as loaded, self.gpu_slots:
            async for chunk in engine_stream.stream_chunks(loaded, item, pool=self._gpu_pool):
                yield chunk

    async def on_gpu(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self._gpu_pool, functools.partial(function, *args, **kwargs)
        )

    async def generate(self, spec: ModelSpec, item: tts_model.SpeechItem) -> bytes:
        if self.continuous:
            waveform = await self._generate_alone(spec, item)
        else:
            waveform = await self.batcher.submit(spec.key, _Work(spec, item))
        return await asyncio.to_thread(to_wav_bytes, waveform)

    async def produce(
        self, spec: ModelSpec, item: tts_model.SpeechItem, *, key: str, job_id: str | None
    ) -> InferS3Response:
        wav = await self.generate(spec, item)
        return await self.outputs.upload(key, wav, text=item.text, job_id=job_id)

    async def produce_all(
        self, spec: ModelSpec, planned: list[Planned], *, job_id: str | None, overwrite: bool, **extra: Any
    ) -> dict[int, Result]:
        """Generate and upload every planned item concurrently (fused by the batcher); errors stay per item.
        Items without a key come back inline (base64 WAV)."""

        async def one(plan: Planned) -> Result:
            try:
                if kept := await self.outputs.kept(
                    plan.key, overwrite=overwrite, text=plan.text, job_id=job_id
                ):
                    return kept
                item = tts_model.SpeechItem(plan.text, plan.language, plan.instruct, **extra, seed=plan.seed)
                if plan.key is None:
                    wav = await self.generate(spec, item)
                    return inline_audio(wav, text=plan.text, filename=plan.filename, job_id=job_id)
                return await self.produce(spec, item, key=plan.key, job_id=job_id)
            except Exception as exc:  # noqa: BLE001 - reported in the item's place
                if status_for(exc) == 500:
                    log.exception("item %d failed", plan.index)
                return BatchItemError(
                    index=plan.index,
                    filename=plan.filename,
                    text=plan.text,
                    error=message_for(exc),
                    status_code=status_for(exc),
                )

        results = await asyncio.gather(*(one(plan) for plan in planned))
        return {plan.index: result for plan, result in zip(planned, results, strict=True)}
