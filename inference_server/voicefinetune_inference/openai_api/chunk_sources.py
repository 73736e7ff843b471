"""Where a stream's audio chunks come from: the generation engine's incremental stream (``Generator.stream``: PCM
chunks while the frames are still being generated; with ``VFT_ENGINE=upstream``, one chunk per utterance)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from voicefinetune_inference.caches.model_cache import ModelSpec
from voicefinetune_inference.engine import tts_model
from voicefinetune_inference.openai_api.streaming import ChunkSource
from voicefinetune_inference.serving.generation import Generator


def engine_chunks(generator: Generator) -> ChunkSource:
    """The engine's chunk stream; closing it (a client that went away) stops that utterance's generation."""

    async def source(spec: ModelSpec, item: tts_model.SpeechItem) -> AsyncIterator[np.ndarray]:
        stream = generator.stream(spec, item)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()

    return source


def chunk_source(generator: Generator) -> ChunkSource:
    return engine_chunks(generator)
