"""What the VRAM cache loads: the spec of a fine-tuned voice (restored from S3 first when the disk LRU deleted
it) or of a shared model (VoiceDesign, Base), and the load itself, timed in the ops log."""

from __future__ import annotations

import asyncio
from pathlib import Path

from voicefinetune.checkpoints import has_model
from voicefinetune.opslog import OpsLog
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage
from voicefinetune_inference.caches.checkpoints import CheckpointLocator
from voicefinetune_inference.caches.disk_cache import DiskCache
from voicefinetune_inference.caches.disk_keeper import DiskKeeper
from voicefinetune_inference.caches.lora_voices import LoraVoice, LoraVoiceReader
from voicefinetune_inference.caches.model_cache import ModelSpec
from voicefinetune_inference.caches.registry import Voice
from voicefinetune_inference.engine import tts_model
from voicefinetune_inference.engine.lora import AdapterBank
from voicefinetune_inference.errors import ModelLoadFailed, VoiceDeleted, VoiceNotReady


def voice_key(job_id: str) -> str:
    return f"voice:{job_id}"


class ModelLoader:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        opslog: OpsLog,
        locator: CheckpointLocator,
        disk: DiskCache,
        keeper: DiskKeeper,
    ):
        self.settings = settings
        self.storage = storage
        self.opslog = opslog
        self.locator = locator
        self.disk = disk
        self.keeper = keeper
        self._shared_paths: dict[str, str] = {}
        self.lora_reader = LoraVoiceReader(settings.gpu_max_adapters)

    def voice_spec(self, voice: Voice) -> ModelSpec:
        return ModelSpec(
            key=voice_key(voice.job_id),
            kind="custom_voice",
            path=self.locator.display_path(self.locator.model_folder(voice)),
            load=lambda: self._load_voice(voice),
            job_id=voice.job_id,
            speaker_name=voice.speaker_name,
        )

    async def shared_spec(self, kind: str) -> ModelSpec:
        """The VoiceDesign ("voice_design") or Base ("base", voice clone) model, in the same cache as voices."""
        if kind not in self._shared_paths:
            from voicefinetune.qwen import resolve_model

            self._shared_paths[kind] = await asyncio.to_thread(resolve_model, self.settings, kind)
        path = self._shared_paths[kind]
        return ModelSpec(key=kind, kind=kind, path=path, load=lambda: self._load_shared(kind, path))

    def _load_voice(self, voice: Voice) -> tts_model.LoadedModel:
        """(worker thread) Restore the folder from S3 if the disk LRU deleted it, then load it."""
        with self.keeper.lock(voice.job_id):
            if (
                self.keeper.registry.get(voice.job_id) is None
            ):  # unregistered meanwhile: its folder may be going
                raise VoiceDeleted.of(voice.job_id)
            folder = self.locator.model_folder(voice)
            with self.opslog.track("model_load", job_id=voice.job_id, checkpoint=str(folder)):
                folder, restored = self._on_disk(voice)
                loaded = self._load_folder(folder)
                self._check_servable(
                    voice, self.locator.display_path(folder), loaded
                )  # inside the tracked op: a refusal is logged ok: false
        if restored:
            self.keeper.prune_quietly(exclude={voice.job_id})
        return loaded

    def lora_voice(self, voice: Voice) -> LoraVoice | None:
        """(worker thread) The voice's adapter and speaker embedding when it is a LoRA voice (its folder restored
        from S3 first if the disk LRU deleted it), None when it is a full one."""
        with self.keeper.lock(voice.job_id):
            folder, restored = self._on_disk(voice)
            found = self.lora_reader.read(voice.job_id, folder)
        if restored:
            self.keeper.prune_quietly(exclude={voice.job_id})
        if found is not None and found.config.speaker_name.lower() != voice.speaker_name.lower():
            raise VoiceNotReady(
                f"job {voice.job_id!r} cannot be served: its LoRA voice is speaker "
                f"{found.config.speaker_name!r}, not {voice.speaker_name!r}"
            )
        return found

    def _on_disk(self, voice: Voice) -> tuple[Path, bool]:
        """The voice's folder, restored from S3 when the disk LRU deleted it; and whether it was. The caller holds
        the voice's keeper lock."""
        if self.keeper.registry.get(voice.job_id) is None:  # unregistered meanwhile: its folder may be going
            raise VoiceDeleted.of(voice.job_id)
        folder = self.locator.model_folder(voice)
        if has_model(folder):
            return folder, False
        if not self.storage.configured:
            raise VoiceNotReady(
                f"job {voice.job_id!r} is not ready: its checkpoint {self.locator.display_path(folder)} is "
                "not on disk and S3 storage is not configured"
            )
        try:
            self.disk.restore(folder, self.locator.s3_prefix(voice))
        except FileNotFoundError as exc:
            raise VoiceNotReady(
                f"job {voice.job_id!r} is not ready: its checkpoint {self.locator.display_path(folder)} is "
                f"not on disk and S3 has no copy ({exc})"
            ) from exc
        return folder, True

    async def base_spec(self, voice: LoraVoice) -> ModelSpec:
        """The resident base model a LoRA voice runs on: the server's Base model (shared with voice clones) when
        the voice names it, else a model of its own per base checkpoint."""
        shared = await self.shared_spec("base")
        named = voice.config.base_model
        if named in (shared.path, self.settings.base_model) or _same_folder(named, shared.path):
            return shared
        if not Path(named).is_dir() and Path(named).is_absolute():
            raise VoiceNotReady(
                f"LoRA voice {voice.key.split('@')[0]} was trained on the base model {Path(named).name}, "
                "which this server does not have"
            )
        key = f"base:{named}"
        return ModelSpec(key=key, kind="base", path=named, load=lambda: self._load_shared("base", named))

    @staticmethod
    def _check_servable(voice: Voice, folder: str, loaded: tts_model.LoadedModel) -> None:
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

    def _load_shared(self, kind: str, path: str) -> tts_model.LoadedModel:
        with self.opslog.track("model_load", job_id=None, checkpoint=path, kind=kind):
            loaded = self._load_folder(path)
        if kind == "base":  # LoRA voices attach to a Base model's talker
            AdapterBank.of(loaded.tts.model.talker, self.settings.gpu_max_adapters)
        return loaded

    def _load_folder(self, folder: Path | str) -> tts_model.LoadedModel:
        try:
            return tts_model.load(str(folder), self.settings)
        except Exception as exc:
            raise ModelLoadFailed(
                f"could not load the model at {folder}: {type(exc).__name__}: {exc}"
            ) from exc


def _same_folder(one: str, other: str) -> bool:
    return Path(one).is_dir() and Path(other).is_dir() and Path(one).resolve() == Path(other).resolve()
