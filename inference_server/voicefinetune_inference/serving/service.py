"""`InferenceService`: the façade the HTTP layer (`api.py`), the facade's local backend and the benches call.

It builds the parts and delegates to them: `voices` (registration), `checkpoints` (where a voice's model lives),
`model_loading` (what the VRAM cache loads), `generation` (fused generate calls and outputs), `cloning`
(reference audio and clone prompts), `synthesis` (the speech requests), `gpu_keeper` (status, unloads, idle
timeout) and `disk_keeper` (the disk LRU).
"""

from __future__ import annotations

from typing import Any

from voicefinetune.opslog import OpsLog
from voicefinetune.schemas import (
    BatchInferRequest,
    GPUStatus,
    InferRequest,
    InferS3Response,
    VoiceCloneBatchRequest,
    VoiceCloneRequest,
    VoiceDesignRequest,
)
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage
from voicefinetune_inference.activity import RequestActivity
from voicefinetune_inference.caches.checkpoints import CheckpointLocator
from voicefinetune_inference.caches.disk_cache import DiskCache
from voicefinetune_inference.caches.disk_keeper import DiskKeeper
from voicefinetune_inference.caches.gpu_keeper import GpuKeeper
from voicefinetune_inference.caches.model_cache import ModelCache
from voicefinetune_inference.caches.model_loading import ModelLoader
from voicefinetune_inference.caches.registry import Voice, VoiceRegistry
from voicefinetune_inference.caches.voices import VoiceCatalog
from voicefinetune_inference.engine import tts_model
from voicefinetune_inference.serving.cloning import VoiceCloner
from voicefinetune_inference.serving.generation import Generator, Result, limit_cpu_threads
from voicefinetune_inference.serving.outputs import AudioOutputs
from voicefinetune_inference.serving.synthesis import SpeechRequests


class InferenceService:
    def __init__(self, settings: Settings, storage: Storage, opslog: OpsLog):
        tts_model.check_engine(
            settings.engine
        )  # a wrong VFT_ENGINE stops the server at start, not each request
        self.settings = settings
        self.storage = storage
        self.opslog = opslog
        self.registry = VoiceRegistry(settings.state_dir / "voices.json")
        self.cache = ModelCache(
            settings.gpu_max_models, tts_model.release, wait_timeout=settings.vram_wait_timeout
        )
        self.disk = DiskCache(settings.jobs_dir, storage)
        self.outputs = AudioOutputs(storage, opslog)
        locator = CheckpointLocator(settings, storage)
        self.disk_keeper = DiskKeeper(settings, self.registry, self.disk, locator)
        loader = ModelLoader(settings, storage, opslog, locator, self.disk, self.disk_keeper)
        self.catalog = VoiceCatalog(self.registry, self.cache, locator, loader)
        self.generator = Generator(settings, self.cache, self.outputs)
        self.batcher = self.generator.batcher
        self.cloner = VoiceCloner(settings, self.cache, loader, self.generator)
        self.activity = RequestActivity(opslog)
        self.gpu = GpuKeeper(settings, self.cache, self.activity)
        self.speech = SpeechRequests(
            settings, storage, self.outputs, self.catalog, loader, self.generator, self.cloner, self.activity
        )

    @property
    def total_requests(self) -> int:
        return self.activity.total_requests

    @property
    def clone_prompts(self) -> int:
        """Voice-clone prompts computed (one per clone request, however many items)."""
        return self.cloner.clone_prompts

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        limit_cpu_threads(self.settings)
        self.gpu.start()

    async def stop(self) -> None:
        await self.gpu.stop()
        await self.batcher.close()
        await self.cache.close()
        self.generator.shutdown()
        self.registry.flush()

    # --- voices ----------------------------------------------------------------------------------------------

    async def register_voice(
        self,
        job_id: str,
        speaker_name: str,
        *,
        checkpoint_path: str | None = None,
        s3_prefix: str | None = None,
        preload: bool = False,
    ) -> dict[str, Any]:
        return await self.catalog.register(
            job_id, speaker_name, checkpoint_path=checkpoint_path, s3_prefix=s3_prefix, preload=preload
        )

    async def unregister_voice(self, job_id: str) -> bool:
        """Stop the voice's requests, unload it, and delete its model folder where S3 holds a copy."""
        voice = self.registry.get(job_id)
        if not await self.catalog.unregister(job_id):
            return False
        if voice is not None:
            await self.disk_keeper.drop_copy(voice)
        return True

    def voices(self) -> list[dict[str, Any]]:
        return self.catalog.all()

    def voice(self, job_id: str) -> Voice:
        return self.catalog.get(job_id)

    # --- speech ----------------------------------------------------------------------------------------------

    async def infer(self, job_id: str, request: InferRequest) -> bytes | InferS3Response:
        return await self.speech.infer(job_id, request)

    async def infer_batch(self, job_id: str, request: BatchInferRequest) -> list[Result]:
        return await self.speech.infer_batch(job_id, request)

    async def voice_design(self, request: VoiceDesignRequest) -> bytes | InferS3Response:
        return await self.speech.voice_design(request)

    async def voice_clone(self, request: VoiceCloneRequest) -> bytes | InferS3Response:
        return await self.speech.voice_clone(request)

    async def voice_clone_batch(self, request: VoiceCloneBatchRequest) -> list[Result]:
        return await self.speech.voice_clone_batch(request)

    # --- GPU and disk ----------------------------------------------------------------------------------------

    def gpu_status(self) -> GPUStatus:
        return self.gpu.status()

    async def unload_all(self) -> dict[str, Any]:
        return await self.gpu.unload_all()

    def set_idle_timeout(self, seconds: int) -> dict[str, Any]:
        return self.gpu.set_idle_timeout(seconds)

    async def prune_disk(self, threshold_gb: float | None = None) -> dict[str, Any]:
        """Run the disk LRU now (``threshold_gb`` defaults to VFT_DISK_CACHE_GB); the report lists what went."""
        return await self.disk_keeper.prune_disk(threshold_gb)
