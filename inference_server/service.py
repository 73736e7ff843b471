"""`InferenceService`: the voice registry, the VRAM and disk caches, request fusion and outputs, tied together.

The HTTP layer (`api.py`) only translates requests and errors; everything that happens lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..opslog import OpsLog
from ..schemas import (
    BatchInferRequest,
    BatchItemError,
    GPUStatus,
    InferRequest,
    InferS3Response,
    InlineAudioResponse,
    InvalidInput,
    VoiceCloneBatchRequest,
    VoiceCloneRequest,
    VoiceDesignRequest,
    check_filename,
    check_language,
    check_text,
)
from ..settings import Settings
from ..storage import Storage, audio_key, build_key, checkpoint_prefix
from . import engine, metrics
from .audio import duration_seconds, to_wav_bytes
from .batcher import Batcher
from .disk_cache import DiskCache, DiskCandidate, has_model, is_inside
from .errors import ModelLoadFailed, VoiceNotFound, VoiceNotReady, message_for, status_for
from .model_cache import ModelCache, ModelSpec
from .outputs import AudioOutputs, auto_filename, inline_audio
from .ref_audio import Origin, RefAudioError, load_reference_audio, url_origin
from .registry import Voice, VoiceRegistry

log = logging.getLogger(__name__)

GB = 1e9
VOICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CHECKPOINT_FOLDER = re.compile(r"^checkpoint-epoch-(\d+)$")  # the trainer's output/checkpoint-epoch-N
RESTORED_FOLDER = "checkpoint"  # jobs/{id}/checkpoint: where a voice registered only by S3 prefix lands

OP_BY_KIND = {
    "custom_voice": "inference_custom_voice",
    "voice_design": "inference_voice_design",
    "base": "inference_voice_clone",
}


@dataclass(frozen=True)
class _Work:
    """One utterance queued for fusion with others of the same model."""

    spec: ModelSpec
    item: engine.SpeechItem


@dataclass
class _Planned:
    """A batch item that passed its checks: what to say and where it goes."""

    index: int
    text: str
    language: str
    instruct: str
    filename: str
    key: str | None


Result = InferS3Response | InlineAudioResponse | BatchItemError


class InferenceService:
    def __init__(self, settings: Settings, storage: Storage, opslog: OpsLog):
        self.settings = settings
        self.storage = storage
        self.opslog = opslog
        self.registry = VoiceRegistry(settings.state_dir / "voices.json")
        self.cache = ModelCache(settings.gpu_max_models, engine.release)
        self.disk = DiskCache(settings.jobs_dir, storage)
        self.outputs = AudioOutputs(storage, opslog)
        self.batcher = Batcher(
            self._run_batch, settings.inference_batch_window_ms / 1000.0, settings.inference_max_batch
        )
        self.idle_timeout = settings.gpu_idle_timeout
        self.total_requests = 0
        self.clone_prompts = 0  # voice-clone prompts computed (one per clone request, however many items)
        self._gpu_slots = asyncio.Semaphore(max(1, settings.gpu_max_concurrency))
        # model calls get their own threads, so that uploads and S3 checks queued in the default pool never delay them
        self._gpu_pool = ThreadPoolExecutor(max(1, settings.gpu_max_concurrency), thread_name_prefix="vft-generate")
        self._in_flight = 0
        self._last_activity = time.monotonic()
        self._disk_locks: dict[str, threading.Lock] = {}
        self._disk_locks_guard = threading.Lock()
        self._prune_lock = threading.Lock()
        self._shared_paths: dict[str, str] = {}
        self._idle_task: asyncio.Task | None = None
        self._idle_config_changed = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._limit_cpu_threads()
        metrics.VRAM_USED_BYTES.set_function(lambda: engine.vram_used_bytes(self.settings))
        if self._idle_task is None:
            self._idle_task = asyncio.get_running_loop().create_task(self._watch_idle())

    async def stop(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._idle_task
            self._idle_task = None
        await self.batcher.close()
        await self.cache.close()
        self._gpu_pool.shutdown(wait=False, cancel_futures=True)
        self.registry.flush()

    def _limit_cpu_threads(self) -> None:
        """On CPU, generate calls run in parallel threads: give each a share of the cores rather than letting
        every call spin up one thread per core (oversubscription makes tiny models ~8x slower)."""
        from ..qwen import choose_runtime

        if choose_runtime(self.settings).on_gpu or "OMP_NUM_THREADS" in os.environ:
            return
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, self.settings.gpu_max_concurrency)))

    # --- voices ----------------------------------------------------------------------------------------------

    async def register_voice(
        self,
        job_id: str,
        speaker_name: str,
        checkpoint_path: str | None = None,
        s3_prefix: str | None = None,
        preload: bool = False,
    ) -> dict[str, Any]:
        """Make ``job_id`` servable (replacing an earlier registration); with ``preload`` load it now, and keep
        the earlier registration (or none) if that load fails.

        Without ``checkpoint_path`` nor ``s3_prefix``, the trainer's layout is assumed: the newest
        ``jobs/{job_id}/output/checkpoint-epoch-N`` on disk, else ``checkpoints/{job_id}`` on S3.
        """
        voice = Voice(
            job_id=self._check_voice_id(job_id),
            speaker_name=self._check_speaker(speaker_name),
            checkpoint_path=self._checkpoint_path(checkpoint_path),
            s3_prefix=build_key(s3_prefix.strip("/")) if s3_prefix else None,
        )
        if voice.checkpoint_path is None and voice.s3_prefix is None:
            voice.checkpoint_path, voice.s3_prefix = await asyncio.to_thread(self._trainer_checkpoint, job_id)
        previous = self.registry.get(job_id)
        if previous is not None:
            voice.last_used = previous.last_used
        self.registry.put(voice)
        if previous is not None and (previous.checkpoint_path, previous.s3_prefix, previous.speaker_name) != (
            voice.checkpoint_path, voice.s3_prefix, voice.speaker_name
        ):
            await self.cache.unload(self._voice_key(job_id))
        if preload:
            try:
                async with self.cache.use(self._voice_spec(voice)):
                    pass
            except BaseException:
                if previous is None:
                    self.registry.remove(job_id)
                else:
                    self.registry.put(previous)
                raise
        return self.describe_voice(voice)

    def _trainer_checkpoint(self, job_id: str) -> tuple[str | None, str | None]:
        """(checkpoint_path, s3_prefix) where ``vft train --job-id {job_id}`` leaves its model by default."""
        output = self.settings.job_dir(job_id) / "output"
        epochs = [
            (int(match.group(1)), folder)
            for folder in (output.iterdir() if output.is_dir() else [])
            if (match := CHECKPOINT_FOLDER.match(folder.name)) and has_model(folder)
        ]
        if epochs:
            return str(max(epochs)[1].absolute()), None
        prefix = checkpoint_prefix(job_id)
        if self.storage.configured and next(iter(self.storage.list(prefix + "/")), None) is not None:
            return None, prefix
        raise InvalidInput(
            f"no checkpoint found for job {job_id!r}: neither {output}/checkpoint-epoch-N on disk nor "
            f"{prefix}/ on S3; give checkpoint_path (a local model folder) or s3_prefix (where S3 holds it)"
        )

    async def unregister_voice(self, job_id: str) -> bool:
        voice = self.registry.remove(job_id)
        if voice is None:
            return False
        await self.cache.unload(self._voice_key(job_id))
        return True

    def voices(self) -> list[dict[str, Any]]:
        return [self.describe_voice(v) for v in self.registry.all()]

    def voice(self, job_id: str) -> Voice:
        voice = self.registry.get(job_id)
        if voice is None:
            raise VoiceNotFound(f"job {job_id!r} not found: no fine-tuned voice is registered under that id")
        return voice

    def describe_voice(self, voice: Voice) -> dict[str, Any]:
        folder = self._model_folder(voice)
        key = self._voice_key(voice.job_id)
        return {
            "job_id": voice.job_id,
            "speaker_name": voice.speaker_name,
            "checkpoint_path": voice.checkpoint_path,
            "s3_prefix": voice.s3_prefix,
            "local_path": str(folder),
            "on_disk": has_model(folder),
            "loaded": any(e.spec.key == key for e in self.cache.loaded()),
            "registered_at": voice.registered_at,
            "last_used": voice.last_used,
        }

    def _check_voice_id(self, job_id: str) -> str:
        if not VOICE_ID_PATTERN.match(job_id) or ".." in job_id:
            raise InvalidInput(
                f"job_id {job_id!r} must be 1-128 letters, digits, '.', '_' or '-' (starting with a letter or digit)"
            )
        return job_id

    @staticmethod
    def _check_speaker(speaker_name: str) -> str:
        if not speaker_name or not speaker_name.strip():
            raise InvalidInput("speaker_name must not be empty")
        return speaker_name.strip()

    def _checkpoint_path(self, checkpoint_path: str | None) -> str | None:
        """Absolute folder; a relative path (like the seed's ``jobs/{id}/output/checkpoint-epoch-9``) is taken
        relative to the data folder and may not climb out of it."""
        if not checkpoint_path:
            return None
        path = Path(checkpoint_path)
        if path.is_absolute():
            return str(path)
        if ".." in path.parts:
            raise InvalidInput(f"checkpoint_path {checkpoint_path!r} must not contain '..'")
        return str((self.settings.data_dir / path).absolute())

    def _model_folder(self, voice: Voice) -> Path:
        """Where the voice's model is read from: its checkpoint folder, or (when that lies outside the jobs
        folder and is gone, or was never given) ``jobs/{id}/checkpoint``, which an S3 restore fills."""
        if voice.checkpoint_path:
            path = Path(voice.checkpoint_path)
            if has_model(path) or is_inside(path, self.settings.jobs_dir):
                return path
        return self.settings.job_dir(voice.job_id) / RESTORED_FOLDER

    @staticmethod
    def _s3_prefix(voice: Voice) -> str:
        """Where S3 holds (or would hold) the voice's checkpoint: as registered, else the trainer's convention."""
        return voice.s3_prefix or checkpoint_prefix(voice.job_id)

    def _display_path(self, path: Path | str) -> str:
        path = Path(path)
        with contextlib.suppress(ValueError):
            return path.absolute().relative_to(self.settings.data_dir.absolute()).as_posix()
        return str(path)

    # --- model specs and loading -----------------------------------------------------------------------------

    @staticmethod
    def _voice_key(job_id: str) -> str:
        return f"voice:{job_id}"

    def _voice_spec(self, voice: Voice) -> ModelSpec:
        return ModelSpec(
            key=self._voice_key(voice.job_id),
            kind="custom_voice",
            path=self._display_path(self._model_folder(voice)),
            load=lambda: self._load_voice(voice),
            job_id=voice.job_id,
            speaker_name=voice.speaker_name,
        )

    async def _shared_spec(self, kind: str) -> ModelSpec:
        """The VoiceDesign ("voice_design") or Base ("base", voice clone) model, in the same cache as voices."""
        if kind not in self._shared_paths:
            from ..qwen import resolve_model

            self._shared_paths[kind] = await asyncio.to_thread(resolve_model, self.settings, kind)
        path = self._shared_paths[kind]
        return ModelSpec(key=kind, kind=kind, path=path, load=lambda: self._load_shared(kind, path))

    def _disk_lock(self, job_id: str) -> threading.Lock:
        with self._disk_locks_guard:
            return self._disk_locks.setdefault(job_id, threading.Lock())

    def _load_voice(self, voice: Voice) -> engine.LoadedModel:
        """(worker thread) Restore the folder from S3 if the disk LRU deleted it, then load it."""
        restored = False
        with self._disk_lock(voice.job_id):
            folder = self._model_folder(voice)
            with self.opslog.track("model_load", job_id=voice.job_id, checkpoint=str(folder)):
                if not has_model(folder):
                    if not self.storage.configured:
                        raise VoiceNotReady(
                            f"job {voice.job_id!r} is not ready: its checkpoint {folder} is not on disk and S3 "
                            "storage is not configured"
                        )
                    try:
                        self.disk.restore(folder, self._s3_prefix(voice))
                    except FileNotFoundError as exc:
                        raise VoiceNotReady(
                            f"job {voice.job_id!r} is not ready: its checkpoint {folder} is not on disk and S3 has "
                            f"no copy ({exc})"
                        ) from exc
                    restored = True
                loaded = self._load_folder(folder)
                self._check_servable(voice, folder, loaded)  # inside the tracked op: a refusal is logged ok: false
        if restored:
            self._prune_quietly(exclude={voice.job_id})
        return loaded

    @staticmethod
    def _check_servable(voice: Voice, folder: Path, loaded: engine.LoadedModel) -> None:
        if loaded.kind != "custom_voice":
            raise VoiceNotReady(
                f"job {voice.job_id!r} cannot be served: {folder} is a {loaded.kind!r} checkpoint, not a fine-tuned "
                "custom_voice one"
            )
        speakers = [s.lower() for s in loaded.speakers()]
        if voice.speaker_name.lower() not in speakers:
            raise VoiceNotReady(
                f"job {voice.job_id!r} cannot be served: speaker {voice.speaker_name!r} is not in {folder} "
                f"(it has: {', '.join(speakers) or 'none'})"
            )

    def _load_shared(self, kind: str, path: str) -> engine.LoadedModel:
        with self.opslog.track("model_load", job_id=None, checkpoint=path, kind=kind):
            return self._load_folder(path)

    def _load_folder(self, folder: Path | str) -> engine.LoadedModel:
        try:
            return engine.load(str(folder), self.settings)
        except Exception as exc:
            raise ModelLoadFailed(f"could not load the model at {folder}: {type(exc).__name__}: {exc}") from exc

    # --- generation ------------------------------------------------------------------------------------------

    async def _run_batch(self, key: str, work: list[_Work]) -> list[np.ndarray | BaseException]:
        """The batcher's call: one generate for all queued items of one model (items alone if that fails)."""
        spec = work[0].spec
        items = [w.item for w in work]
        async with self.cache.use(spec) as loaded, self._gpu_slots:
            started = time.monotonic()
            try:
                wavs: list[Any] = await self._on_gpu(engine.generate, loaded, items)
            except Exception as exc:
                if len(items) == 1:
                    raise
                log.warning("fused generate of %d items for %s failed (%s); retrying one by one", len(items), key, exc)
                wavs = []
                for item in items:
                    try:
                        wavs.extend(await self._on_gpu(engine.generate, loaded, [item]))
                    except Exception as item_exc:  # noqa: BLE001 - reported in that item's place
                        wavs.append(item_exc)
        metrics.BATCH_SIZE.observe(len(items))
        metrics.GENERATE_SECONDS.observe(time.monotonic() - started)
        produced = [w for w in wavs if not isinstance(w, BaseException)]
        metrics.ITEMS.labels(spec.kind).inc(len(produced))
        metrics.AUDIO_SECONDS.labels(spec.kind).inc(sum(duration_seconds(w) for w in produced))
        return wavs

    async def _on_gpu(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._gpu_pool, functools.partial(function, *args))

    async def _generate(self, spec: ModelSpec, item: engine.SpeechItem) -> bytes:
        waveform = await self.batcher.submit(spec.key, _Work(spec, item))
        return await asyncio.to_thread(to_wav_bytes, waveform)

    @contextlib.contextmanager
    def _activity(self, op_name: str, job_id: str | None, **details: Any) -> Iterator[None]:
        """Count a request, keep the idle timer from firing while it runs, and time it in the ops log."""
        self.total_requests += 1
        self._in_flight += 1
        self._last_activity = time.monotonic()
        try:
            with self.opslog.track(op_name, job_id=job_id, **details):
                yield
        finally:
            self._in_flight -= 1
            self._last_activity = time.monotonic()

    async def _produce(self, spec: ModelSpec, item: engine.SpeechItem, key: str, job_id: str | None) -> Result:
        wav = await self._generate(spec, item)
        return await self.outputs.upload(key, wav, item.text, job_id)

    async def _produce_all(
        self, spec: ModelSpec, planned: list[_Planned], job_id: str | None, overwrite: bool, **extra: Any
    ) -> dict[int, Result]:
        """Generate and upload every planned item concurrently (fused by the batcher); errors stay per item.
        Items without a key come back inline (base64 WAV)."""

        async def one(plan: _Planned) -> Result:
            try:
                if plan.key is not None and not overwrite and await self.outputs.existing(plan.key):
                    return self.outputs.response(plan.key, plan.text, job_id)
                item = engine.SpeechItem(plan.text, plan.language, plan.instruct, **extra)
                if plan.key is None:
                    wav = await self._generate(spec, item)
                    return inline_audio(wav, plan.text, plan.filename, job_id)
                return await self._produce(spec, item, plan.key, job_id)
            except Exception as exc:  # noqa: BLE001 - reported in the item's place
                if status_for(exc) == 500:
                    log.exception("item %d failed", plan.index)
                return BatchItemError(
                    index=plan.index, filename=plan.filename, text=plan.text, error=message_for(exc),
                    status_code=status_for(exc),
                )

        results = await asyncio.gather(*(one(plan) for plan in planned))
        return {plan.index: result for plan, result in zip(planned, results, strict=True)}

    # --- endpoints: custom voice -----------------------------------------------------------------------------

    async def infer(self, job_id: str, request: InferRequest) -> bytes | InferS3Response:
        """One utterance in a fine-tuned voice: the WAV, or the S3 object it was uploaded to."""
        voice = self.voice(job_id)
        text = check_text(request.text, self.settings.max_text_chars)
        language = check_language(request.language)
        upload = self.storage.configured if request.upload_to_s3 is None else request.upload_to_s3
        key = None
        if upload:
            self.outputs.require_storage()
            filename = check_filename(request.s3_filename) if request.s3_filename else auto_filename("tts")
            key = audio_key(job_id, filename, request.book_id, request.chapter_id)
        spec = self._voice_spec(voice)
        with self._activity("inference_custom_voice", job_id):
            self.registry.touch(job_id)
            if key is not None and not request.overwrite and await self.outputs.existing(key):
                return self.outputs.response(key, text, job_id)
            item = engine.SpeechItem(text, language, request.instruct or "", speaker=voice.speaker_name)
            if key is None:
                return await self._generate(spec, item)
            return await self._produce(spec, item, key, job_id)

    async def infer_batch(self, job_id: str, request: BatchInferRequest) -> list[Result]:
        """Many utterances in one voice, uploaded to S3; results in request order, bad items reported in place."""
        voice = self.voice(job_id)
        self.outputs.require_storage()
        default_language = check_language(request.language)
        results: dict[int, Result] = {}
        planned: list[_Planned] = []
        used: dict[str, int] = {}
        for index, entry in enumerate(request.items):
            try:
                text = check_text(entry.text, self.settings.max_text_chars)
                language = check_language(entry.language) if entry.language else default_language
                filename = check_filename(entry.filename) if entry.filename else auto_filename("tts")
                key = audio_key(job_id, filename, request.book_id, request.chapter_id)
                if key in used:
                    raise InvalidInput(f"filename {filename!r} is already used by item {used[key]} of this batch")
                used[key] = index
                instruct = request.instruct if entry.instruct is None else entry.instruct
                planned.append(_Planned(index, text, language, instruct or "", filename, key))
            except Exception as exc:
                results[index] = self._item_error(index, entry.filename, entry.text, exc)
        spec = self._voice_spec(voice)
        with self._activity("inference_custom_voice", job_id, items=len(request.items)):
            self.registry.touch(job_id)
            results.update(await self._produce_all(spec, planned, job_id, request.overwrite, speaker=voice.speaker_name))
        return [results[index] for index in range(len(request.items))]

    # --- endpoints: voice design and voice clone -------------------------------------------------------------

    async def voice_design(self, request: VoiceDesignRequest) -> bytes | InferS3Response:
        text = check_text(request.text, self.settings.max_text_chars)
        language = check_language(request.language)
        key = None
        if request.upload_to_s3:
            self.outputs.require_storage()
            filename = check_filename(request.s3_filename) if request.s3_filename else auto_filename("design")
            key = audio_key(None, filename)
        spec = await self._shared_spec("voice_design")
        with self._activity("inference_voice_design", None):
            if key is not None and not request.overwrite and await self.outputs.existing(key):
                return self.outputs.response(key, text, None)
            item = engine.SpeechItem(text, language, request.instruct or "")
            if key is None:
                return await self._generate(spec, item)
            return await self._produce(spec, item, key, None)

    async def voice_clone(self, request: VoiceCloneRequest) -> bytes | InferS3Response:
        text = check_text(request.text, self.settings.max_text_chars)
        language = check_language(request.language)
        self._check_ref_text(request.ref_text, request.use_xvec)
        upload = self.storage.configured if request.upload_to_s3 is None else request.upload_to_s3
        key = None
        if upload:
            self.outputs.require_storage()
            filename = check_filename(request.s3_filename) if request.s3_filename else auto_filename("clone")
            key = audio_key(None, filename)
        waveform, rate = await self._reference_audio(request.ref_audio_url)
        with self._activity("inference_voice_clone", None):
            if key is not None and not request.overwrite and await self.outputs.existing(key):
                return self.outputs.response(key, text, None)
            spec, prompt = await self._clone_prompt(waveform, rate, request.ref_text, request.use_xvec)
            item = engine.SpeechItem(text, language, clone_prompt=prompt)
            if key is None:
                return await self._generate(spec, item)
            return await self._produce(spec, item, key, None)

    async def voice_clone_batch(self, request: VoiceCloneBatchRequest) -> list[Result]:
        """Clone one reference voice for many texts: the prompt is computed once and reused for every item.
        Uploaded to S3, or (``upload_to_s3: false``) each WAV returned base64-encoded in its entry."""
        if request.upload_to_s3:
            self.outputs.require_storage()
        language = check_language(request.language)
        self._check_ref_text(request.ref_text, request.use_xvec)
        results: dict[int, Result] = {}
        planned: list[_Planned] = []
        used: dict[str, int] = {}
        for index, entry in enumerate(request.items):
            try:
                text = check_text(entry.text, self.settings.max_text_chars)
                filename = check_filename(entry.filename) if entry.filename else auto_filename("clone")
                key = audio_key(None, filename) if request.upload_to_s3 else None
                if key is not None and key in used:
                    raise InvalidInput(f"filename {filename!r} is already used by item {used[key]} of this batch")
                if key is not None:
                    used[key] = index
                planned.append(_Planned(index, text, language, "", filename, key))
            except Exception as exc:
                results[index] = self._item_error(index, entry.filename, entry.text, exc)
        waveform, rate = await self._reference_audio(request.ref_audio_url)
        with self._activity("inference_voice_clone", None, items=len(request.items)):
            if planned:
                spec, prompt = await self._clone_prompt(waveform, rate, request.ref_text, request.use_xvec)
                results.update(await self._produce_all(spec, planned, None, request.overwrite, clone_prompt=prompt))
        return [results[index] for index in range(len(request.items))]

    async def _reference_audio(self, value: str) -> tuple[np.ndarray, int]:
        return await load_reference_audio(value, self.settings.allow_private_urls, self._trusted_origins())

    def _trusted_origins(self) -> set[Origin]:
        """VFT_TRUSTED_URL_ORIGINS: hosts whose reference URLs may be private (e.g. an in-cluster S3 endpoint)."""
        origins = (url_origin(entry.strip()) for entry in self.settings.trusted_url_origins.split(","))
        return {origin for origin in origins if origin is not None}

    @staticmethod
    def _check_ref_text(ref_text: str, use_xvec: bool) -> None:
        if not use_xvec and not (ref_text or "").strip():
            raise InvalidInput("ref_text (the transcript of the reference audio) is required unless use_xvec is true")

    async def _clone_prompt(self, waveform: np.ndarray, rate: int, ref_text: str, use_xvec: bool) -> tuple[ModelSpec, Any]:
        spec = await self._shared_spec("base")
        async with self.cache.use(spec) as loaded, self._gpu_slots:
            try:
                prompt = await self._on_gpu(engine.clone_prompt, loaded, waveform, rate, ref_text, use_xvec)
            except (ValueError, RuntimeError) as exc:
                raise RefAudioError(f"the reference audio could not be used for cloning: {exc}") from exc
        self.clone_prompts += 1
        return spec, prompt

    @staticmethod
    def _item_error(index: int, filename: str | None, text: str | None, exc: Exception) -> BatchItemError:
        return BatchItemError(
            index=index, filename=filename, text=text, error=message_for(exc), status_code=status_for(exc)
        )

    # --- GPU -------------------------------------------------------------------------------------------------

    def gpu_status(self) -> GPUStatus:
        loaded = self.cache.loaded()
        current = loaded[0].spec if loaded else None
        idle = 0.0 if self._in_flight else time.monotonic() - self._last_activity
        return GPUStatus(
            model_loaded=bool(loaded),
            loaded_checkpoint=current.path if current else None,
            speaker_name=current.speaker_name if current else None,
            auto_unload_enabled=self.idle_timeout > 0,
            idle_timeout_seconds=self.idle_timeout,
            idle_seconds=round(idle, 1),
            total_requests=self.total_requests,
            total_loads=self.cache.total_loads,
            total_unloads=self.cache.total_unloads,
            **engine.gpu_memory(self.settings),
            loaded_models=self.cache.describe(),
            max_models=self.cache.max_models,
        )

    async def unload_all(self) -> dict[str, Any]:
        count = await self.cache.unload()
        return {"status": "unloaded", "unloaded": count, "total_unloads": self.cache.total_unloads}

    def set_idle_timeout(self, seconds: int) -> dict[str, Any]:
        if seconds < 0:
            raise InvalidInput("idle_timeout_seconds must be 0 (disabled) or more")
        self.idle_timeout = seconds
        self._idle_config_changed.set()
        return {"idle_timeout_seconds": seconds, "auto_unload_enabled": seconds > 0}

    async def _watch_idle(self) -> None:
        while True:
            timeout = self.idle_timeout
            interval = min(1.0, max(0.05, timeout / 4)) if timeout > 0 else 1.0
            with contextlib.suppress(TimeoutError):  # a new timeout (PUT /gpu/config) applies at once
                await asyncio.wait_for(self._idle_config_changed.wait(), interval)
            self._idle_config_changed.clear()
            timeout = self.idle_timeout
            if timeout <= 0 or self._in_flight or self.cache.busy() or not self.cache.loaded():
                continue
            if time.monotonic() - self._last_activity >= timeout:
                log.info("idle for %s s: unloading every model", timeout)
                await self.cache.unload()

    # --- disk ------------------------------------------------------------------------------------------------

    async def prune_disk(self, threshold_gb: float | None = None) -> dict[str, Any]:
        """Run the disk LRU now (``threshold_gb`` defaults to VFT_DISK_CACHE_GB); the report lists what went."""
        threshold = self.settings.disk_cache_gb if threshold_gb is None else threshold_gb
        if threshold < 0:
            raise InvalidInput("threshold_gb must be 0 or more")
        return await asyncio.to_thread(self._prune, threshold)

    def _prune(self, threshold_gb: float, exclude: set[str] = frozenset()) -> dict[str, Any]:
        with self._prune_lock:
            self.registry.flush()
            candidates = [
                DiskCandidate(
                    job_id=voice.job_id,
                    folder=self._model_folder(voice),
                    s3_prefix=self._s3_prefix(voice),
                    last_used=voice.last_used or voice.registered_at,
                )
                for voice in self.registry.all()
                if voice.job_id not in exclude
            ]
            return self.disk.prune(threshold_gb * GB, candidates, self._disk_lock)

    def _prune_quietly(self, exclude: set[str]) -> None:
        try:
            report = self._prune(self.settings.disk_cache_gb, exclude)
            if report["deleted"]:
                log.info("disk LRU after a restore deleted %s", [d["job_id"] for d in report["deleted"]])
        except Exception:  # noqa: BLE001 - the restore succeeded; pruning is best effort here
            log.exception("disk LRU after a restore failed")
