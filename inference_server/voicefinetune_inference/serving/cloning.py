"""Voice clone inputs: the reference audio (fetched under the private-URL rules) and the clone prompt the Base
model computes from it, once per reference while the model stays loaded (`engine.clone_prompts`)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import numpy as np

from voicefinetune.schemas import InvalidInput
from voicefinetune.settings import Settings
from voicefinetune_inference import metrics
from voicefinetune_inference.audio.reference import Origin, RefAudioError, load_reference_audio, url_origin
from voicefinetune_inference.caches.model_cache import ModelCache, ModelSpec
from voicefinetune_inference.caches.model_loading import ModelLoader
from voicefinetune_inference.engine import tts_model
from voicefinetune_inference.engine.clone_prompts import prompt_key, reference_digest
from voicefinetune_inference.serving.generation import Generator


def reference_id(waveform: np.ndarray, rate: int, *, ref_text: str, use_xvec: bool) -> str:
    """A short digest of the reference voice (its audio, and its transcript unless only the x-vector is used): the
    folder of its clone outputs, so the same reference finds its files again and different ones never collide."""
    return reference_digest(waveform, rate, text="" if use_xvec else ref_text.strip(), use_xvec=use_xvec)[:16]


def check_ref_text(ref_text: str, use_xvec: bool) -> None:
    if not use_xvec and not (ref_text or "").strip():
        raise InvalidInput(
            "ref_text (the transcript of the reference audio) is required unless use_xvec is true"
        )


class VoiceCloner:
    def __init__(self, settings: Settings, cache: ModelCache, loader: ModelLoader, generator: Generator):
        self.settings = settings
        self.cache = cache
        self.loader = loader
        self.generator = generator
        # voice-clone prompts computed (one per reference while its model stays loaded)
        self.clone_prompts = 0
        self.clone_prompt_hits = 0  # clone requests that found their reference's prompt (or waited for it)

    async def reference_audio(self, value: str) -> tuple[np.ndarray, int]:
        return await load_reference_audio(value, self.settings.allow_private_urls, self._trusted_origins())

    def _trusted_origins(self) -> set[Origin]:
        """VFT_TRUSTED_URL_ORIGINS: hosts whose reference URLs may be private (e.g. an in-cluster S3 endpoint)."""
        origins = (url_origin(entry.strip()) for entry in self.settings.trusted_url_origins.split(","))
        return {origin for origin in origins if origin is not None}

    async def clone_prompt(
        self, waveform: np.ndarray, *, rate: int, ref_text: str, use_xvec: bool
    ) -> tuple[ModelSpec, Any]:
        spec = await self.loader.shared_spec("base")
        key = await asyncio.to_thread(prompt_key, waveform, rate, ref_text=ref_text, use_xvec=use_xvec)
        async with self.cache.use(spec) as loaded:
            prompt = loaded.clone_prompts.ready(key)  # a computed prompt needs no GPU slot
            found = prompt is not None
            if not found:
                async with self.generator.gpu_slots:
                    try:
                        # computed once per reference while the model stays loaded (or awaited from a
                        # request computing it now)
                        prompt, found = await self.generator.on_gpu(
                            loaded.clone_prompts.get,
                            key,
                            functools.partial(
                                tts_model.clone_prompt,
                                loaded,
                                waveform,
                                sample_rate=rate,
                                ref_text=ref_text,
                                use_xvec=use_xvec,
                            ),
                        )
                    except (ValueError, RuntimeError) as exc:
                        raise RefAudioError(
                            f"the reference audio could not be used for cloning: {exc}"
                        ) from exc
        if found:
            self.clone_prompt_hits += 1
            metrics.CLONE_PROMPT_CACHE_HITS.inc()
        else:
            self.clone_prompts += 1
            metrics.CLONE_PROMPTS_COMPUTED.inc()
        return spec, prompt
