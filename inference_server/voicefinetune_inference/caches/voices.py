"""The servable voices: registering a fine-tuned checkpoint under a job id, looking it up, describing it,
unregistering it (and deleting its folder where S3 holds a copy)."""

from __future__ import annotations

import asyncio
from typing import Any

from voicefinetune.checkpoints import has_model
from voicefinetune.schemas import InvalidInput, check_speaker_name, is_segment_id
from voicefinetune_inference.caches.checkpoints import CheckpointLocator
from voicefinetune_inference.caches.disk_keeper import DiskKeeper
from voicefinetune_inference.caches.model_cache import ModelCache, ModelSpec
from voicefinetune_inference.caches.model_loading import ModelLoader, voice_key
from voicefinetune_inference.caches.registry import Voice, VoiceRegistry
from voicefinetune_inference.caches.voice_work import VoiceWork
from voicefinetune_inference.engine.lora import AdapterBank, AdapterUse
from voicefinetune_inference.errors import VoiceNotFound


class VoiceCatalog:
    def __init__(
        self,
        registry: VoiceRegistry,
        cache: ModelCache,
        locator: CheckpointLocator,
        loader: ModelLoader,
        keeper: DiskKeeper,
    ):
        self.registry = registry
        self.cache = cache
        self.locator = locator
        self.loader = loader
        self.keeper = keeper
        self.work = VoiceWork()  # the requests running for each voice

    async def register(
        self,
        job_id: str,
        speaker_name: str,
        *,
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
            job_id=check_voice_id(job_id),
            speaker_name=check_speaker_name(speaker_name),
            checkpoint_path=self.locator.checkpoint_path(job_id, checkpoint_path),
            s3_prefix=self.locator.own_s3_prefix(job_id, s3_prefix),
        )
        if voice.checkpoint_path is None and voice.s3_prefix is None:
            voice.checkpoint_path, voice.s3_prefix = await asyncio.to_thread(
                self.locator.trainer_checkpoint, job_id
            )
        previous = self.registry.get(job_id)
        if previous is not None:
            voice.last_used = previous.last_used
        self.registry.put(voice)
        if previous is not None and (previous.checkpoint_path, previous.s3_prefix, previous.speaker_name) != (
            voice.checkpoint_path,
            voice.s3_prefix,
            voice.speaker_name,
        ):
            await self.cache.unload(voice_key(job_id))
        if preload:
            try:
                await self.preload(voice)
            except BaseException:
                if previous is None:
                    self.registry.remove(job_id)
                else:
                    self.registry.put(previous)
                raise
        return self.describe(voice)

    async def target(self, voice: Voice, strength: float = 1.0) -> tuple[ModelSpec, dict[str, Any]]:
        """The model that speaks ``voice`` and what a `SpeechItem` of it carries: a full voice's own model and its
        speaker; a LoRA voice's base model, its x-vector prompt and its adapter at ``strength``."""
        if not any(entry.spec.key == voice_key(voice.job_id) for entry in self.cache.loaded()):
            lora = await asyncio.to_thread(self.loader.lora_voice, voice)
            if lora is not None:
                use = AdapterUse(lora.key, lora.weights, strength)
                return await self.loader.base_spec(lora), {
                    "clone_prompt": lora.clone_prompt(),
                    "adapter": use,
                }
        return self.loader.voice_spec(voice), {"speaker": voice.speaker_name}

    async def preload(self, voice: Voice) -> None:
        """Load the voice's model; a LoRA voice's adapter is attached to its base model too."""
        spec, extra = await self.target(voice)
        async with self.cache.use(spec) as loaded:
            if extra.get("adapter") is not None:
                await asyncio.to_thread(attach_now, loaded, extra["adapter"])

    async def unregister(self, job_id: str) -> bool:
        """Stop serving ``job_id``: new requests find no voice, running ones end with ``VoiceDeleted``, the model
        is unloaded; once nothing uses or restores its folder any more, the folder is deleted where S3 holds a
        copy. False if no voice is registered under ``job_id``."""
        voice = self.registry.remove(check_voice_id(job_id))
        if voice is None:
            return False
        await self.work.stop(job_id)
        await self.cache.discard(voice_key(job_id))
        for loaded in [entry.model for entry in self.cache.loaded()]:
            await asyncio.to_thread(detach_now, loaded, voice_key(job_id))
        await self.keeper.drop_copy(voice)
        return True

    def all(self) -> list[dict[str, Any]]:
        return [self.describe(v) for v in self.registry.all()]

    def get(self, job_id: str) -> Voice:
        voice = self.registry.get(check_voice_id(job_id))
        if voice is None:
            raise VoiceNotFound(f"job {job_id!r} not found: no fine-tuned voice is registered under that id")
        return voice

    def touch(self, job_id: str) -> None:
        """Mark the voice used now (the disk LRU keeps recently used voices)."""
        self.registry.touch(job_id)

    def describe(self, voice: Voice) -> dict[str, Any]:
        folder = self.locator.model_folder(voice)
        key = voice_key(voice.job_id)
        return {
            "job_id": voice.job_id,
            "speaker_name": voice.speaker_name,
            "checkpoint_path": voice.checkpoint_path,
            "s3_prefix": voice.s3_prefix,
            "local_path": str(folder),
            "on_disk": has_model(folder),
            "loaded": any(e.spec.key == key or attached(e.model, key) for e in self.cache.loaded()),
            "registered_at": voice.registered_at,
            "last_used": voice.last_used,
        }


def check_voice_id(job_id: str) -> str:
    if not is_segment_id(job_id):
        raise InvalidInput(
            f"job_id {job_id!r} must be 1-128 letters, digits, '.', '_' or '-' (starting with a letter or digit)"
        )
    return job_id


def attach_now(loaded: Any, use: AdapterUse) -> None:
    """(worker thread) Attach a LoRA voice's adapter to a loaded base model, holding the model."""
    with loaded.lock:
        bank = AdapterBank.existing(loaded.tts.model.talker)
        if bank is None:
            raise ValueError("this model takes no LoRA adapters: only a Base model serves LoRA voices")
        bank.attach(use.key, use.weights)


def detach_now(loaded: Any, voice: str) -> None:
    """(worker thread) Drop every version of a voice's adapter from a loaded model, holding the model."""
    bank = AdapterBank.existing(loaded.tts.model.talker) if loaded.tts is not None else None
    if bank is None:
        return
    with loaded.lock:
        for entry in bank.describe():
            if entry["key"].split("@")[0] == voice:
                bank.detach(entry["key"])


def attached(loaded: Any, voice: str) -> bool:
    """Whether a loaded model holds an adapter of ``voice`` (a voice key, any version)."""
    bank = (
        AdapterBank.existing(loaded.tts.model.talker)
        if loaded is not None and loaded.tts is not None
        else None
    )
    return bank is not None and any(entry["key"].split("@")[0] == voice for entry in bank.describe())
