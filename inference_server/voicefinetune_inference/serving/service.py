"""`InferenceService`: the inference server's parts, built once and started and stopped together.

It is where the parts are composed, not a way in: the routes, the facade's local backend and the benches call the
parts themselves. `catalog` (the voices: register, unregister, list), `speech` (the speech requests), `gpu`
(status, unloads, the idle timeout), `disk_keeper` (the disk LRU), `outputs` and `storage` (S3 answers),
`generator` (fused generate calls and streams), `cloner` (reference audio and clone prompts), `activity` (requests
under way) and `opslog`.
"""

from __future__ import annotations

from voicefinetune.opslog import OpsLog
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage
from voicefinetune_inference.activity import RequestActivity
from voicefinetune_inference.caches.checkpoints import CheckpointLocator
from voicefinetune_inference.caches.disk_cache import DiskCache
from voicefinetune_inference.caches.disk_keeper import DiskKeeper
from voicefinetune_inference.caches.gpu_keeper import GpuKeeper
from voicefinetune_inference.caches.model_cache import ModelCache
from voicefinetune_inference.caches.model_loading import ModelLoader
from voicefinetune_inference.caches.registry import VoiceRegistry
from voicefinetune_inference.caches.voices import VoiceCatalog
from voicefinetune_inference.engine import tts_model
from voicefinetune_inference.serving.cloning import VoiceCloner
from voicefinetune_inference.serving.generation import Generator, limit_cpu_threads
from voicefinetune_inference.serving.outputs import AudioOutputs
from voicefinetune_inference.serving.synthesis import SpeechRequests


class InferenceService:
    def __init__(self, settings: Settings, storage: Storage, opslog: OpsLog):
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
        self.catalog = VoiceCatalog(self.registry, self.cache, locator, loader, self.disk_keeper)
        self.generator = Generator(settings, self.cache, self.outputs)
        self.batcher = self.generator.batcher
        self.cloner = VoiceCloner(settings, self.cache, loader, self.generator)
        self.activity = RequestActivity(opslog)
        self.gpu = GpuKeeper(settings, self.cache, self.activity)
        self.speech = SpeechRequests(
            settings, storage, self.outputs, self.catalog, loader, self.generator, self.cloner, self.activity
        )

    async def start(self) -> None:
        limit_cpu_threads(self.settings)
        self.gpu.start()

    async def stop(self) -> None:
        await self.gpu.stop()
        await self.batcher.close()
        await self.cache.close()
        self.generator.shutdown()
        self.registry.flush()
