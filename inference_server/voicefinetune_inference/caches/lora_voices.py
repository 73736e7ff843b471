"""LoRA voices on the inference server: a voice folder read into what the engine attaches (the adapter) and what
the prompt carries (the speaker embedding, as an x-vector voice-clone prompt of the base model).

Reads are kept for the most recent ``GPU_MAX_ADAPTERS`` folders (a few hundred kB each at rank 16 on 1.7B), so a
voice switch reads nothing from disk; a folder written again (a new checkpoint) is read again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicefinetune.checkpoints import CONFIG_FILE
from voicefinetune.lora_voice import (
    ADAPTER_WEIGHTS_FILE,
    SPEAKER_EMBEDDING_FILE,
    SPEAKER_EMBEDDING_KEY,
    LoraVoiceConfig,
)
from voicefinetune_inference.engine.lora import AdapterWeights, read_peft_adapter


@dataclass(frozen=True)
class LoraVoice:
    key: str  # the adapter bank's key: the voice and the folder's version
    config: LoraVoiceConfig
    weights: AdapterWeights
    speaker_embedding: Any  # torch.Tensor [H]
    prompt: Any  # its x-vector voice-clone prompt (`x_vector_prompt`)

    def clone_prompt(self) -> Any:
        return self.prompt


def x_vector_prompt(embedding: Any) -> Any:
    """The base model's x-vector prompt of a speaker embedding: the speaker slot a full voice fills from its codec
    row. (Built where the voice is read, in a worker thread: the first import of qwen_tts takes seconds.)"""
    from qwen_tts.inference.qwen3_tts_model import VoiceClonePromptItem

    return VoiceClonePromptItem(
        ref_code=None, ref_spk_embedding=embedding, x_vector_only_mode=True, icl_mode=False
    )


def read_lora_voice(folder: Path, key: str, config: LoraVoiceConfig) -> LoraVoice:
    from safetensors.torch import load_file

    weights = read_peft_adapter(load_file(str(Path(folder) / ADAPTER_WEIGHTS_FILE)), config.scaling)
    embedding = load_file(str(Path(folder) / SPEAKER_EMBEDDING_FILE))[SPEAKER_EMBEDDING_KEY]
    return LoraVoice(key, config, weights, embedding, x_vector_prompt(embedding))


class LoraVoiceReader:
    def __init__(self, keep: int):
        self.keep = max(1, keep)
        self._read: OrderedDict[str, LoraVoice] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0

    def read(self, job_id: str, folder: Path) -> LoraVoice | None:
        """(worker thread) The LoRA voice in ``folder``; None when the folder holds a full model."""
        config = LoraVoiceConfig.read(folder)
        if config is None:
            return None
        key = f"voice:{job_id}@{(Path(folder) / CONFIG_FILE).stat().st_mtime_ns}"
        with self._lock:
            if key in self._read:
                self._read.move_to_end(key)
                return self._read[key]
        voice = read_lora_voice(folder, key, config)
        with self._lock:
            self.reads += 1
            self._read[key] = voice
            while len(self._read) > self.keep:
                self._read.popitem(last=False)
        return voice
