"""A LoRA voice's folder, as the trainer writes it and the inference server reads it.

``checkpoint-epoch-N/`` of a ``method: lora`` job holds:
- ``config.json``: ``{"tts_model_type": "lora_voice", "base_model", "speaker_name", "lora": {rank, alpha, targets}}``
  (its presence marks a complete folder, as for a full checkpoint);
- ``adapter_config.json`` and ``adapter_model.safetensors``: PEFT's own files for the talker's adapter (the talker
  is the module the adapter was made for, so ``PeftModel.from_pretrained(talker, folder)`` loads it);
- ``speaker_embedding.safetensors``: the averaged speaker-encoder output, what a full voice writes into its codec row;
- ``trainer_state.json`` (and ``optimizer.pt`` when a run stopped early), as for a full checkpoint.

Kept free of torch: the facade and the operator read nothing here, yet the names are one source for both parts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoints import CONFIG_FILE
from .schemas import LORA_TARGETS

LORA_VOICE = "lora_voice"  # config.json's tts_model_type
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
SPEAKER_EMBEDDING_FILE = "speaker_embedding.safetensors"
SPEAKER_EMBEDDING_KEY = "speaker_embedding"
# Module names inside the talker: its decoder layers and its code predictor's.
_LAYER_PREFIX = r"(?:model|code_predictor\.model)\.layers\.\d+\.(?:self_attn|mlp)\."


def target_pattern(targets: tuple[str, ...] | list[str] | None) -> str:
    """The regular expression (PEFT's ``target_modules`` as a string: a full match) of the talker's modules that
    ``targets`` names; None: every projection of ``LORA_TARGETS``."""
    names = tuple(targets or LORA_TARGETS)
    return _LAYER_PREFIX + "(?:" + "|".join(re.escape(name) for name in names) + ")"


def default_alpha(rank: int) -> int:
    return 2 * rank


@dataclass(frozen=True)
class LoraVoiceConfig:
    base_model: (
        str  # the base checkpoint the adapter was trained on: a folder or a hub id, as the trainer had it
    )
    speaker_name: str
    rank: int
    alpha: int
    targets: tuple[str, ...]

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def write(self, folder: Path) -> None:
        body = {
            "tts_model_type": LORA_VOICE,
            "base_model": self.base_model,
            "speaker_name": self.speaker_name,
            "lora": {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)},
        }
        (Path(folder) / CONFIG_FILE).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> LoraVoiceConfig | None:
        """The folder's LoRA config; None when the folder holds a full model (or no config)."""
        path = Path(folder) / CONFIG_FILE
        if not path.is_file():
            return None
        body: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if body.get("tts_model_type") != LORA_VOICE:
            return None
        lora = body["lora"]
        return cls(
            base_model=str(body["base_model"]),
            speaker_name=str(body["speaker_name"]),
            rank=int(lora["rank"]),
            alpha=int(lora["alpha"]),
            targets=tuple(lora["targets"]),
        )


def is_lora_voice(folder: Path) -> bool:
    return LoraVoiceConfig.read(folder) is not None
