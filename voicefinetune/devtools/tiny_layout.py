"""Where a set of tiny checkpoints lives on disk and when it is complete.

The folder layout (``<root>/base``, ``<root>/voice_design``, ``<root>/custom_voice``) is the core's
(`voicefinetune.qwen.tiny_model_folder`, what `resolve_model` names); this adds the marker file a finished build
writes last, with its format version and seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..qwen import TINY_MODEL_KINDS, tiny_model_folder
from .tiny_configs import TINY_SPEAKER

FORMAT_VERSION = 1
MARKER_FILE = "tiny-models.json"
KINDS = TINY_MODEL_KINDS


@dataclass(frozen=True)
class TinyModels:
    root: Path
    base: Path
    voice_design: Path
    custom_voice: Path

    @classmethod
    def at(cls, root: str | Path) -> TinyModels:
        root = Path(root)
        return cls(root=root, **{kind: tiny_model_folder(root, kind) for kind in KINDS})

    def as_dict(self) -> dict[str, str]:
        return {
            "root": str(self.root),
            "base": str(self.base),
            "voice_design": str(self.voice_design),
            "custom_voice": str(self.custom_voice),
            "speaker": TINY_SPEAKER,
        }


def is_complete(directory: str | Path, seed: int | None = None) -> bool:
    """True when `directory` holds a finished build of this format (and of `seed`, when given); the marker file is
    written last, after every folder is in place."""
    marker = Path(directory) / MARKER_FILE
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    models = TinyModels.at(Path(directory))
    folders = (models.base, models.voice_design, models.custom_voice)
    if info.get("format_version") != FORMAT_VERSION or (seed is not None and info.get("seed") != seed):
        return False
    return all((f / "model.safetensors").is_file() for f in folders)
