"""A fine-tune's checkpoint folders: the trainer writes ``jobs/{id}/output/checkpoint-epoch-N``, a resumed run and
the inference server read the newest one."""

from __future__ import annotations

import re
from pathlib import Path

from voicefinetune.settings import Settings

CONFIG_FILE = "config.json"  # every model folder has one: its presence marks a complete model
OUTPUT_FOLDER = "output"
CHECKPOINT_PREFIX = "checkpoint-epoch-"
_CHECKPOINT_NAME = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")


def training_output_dir(settings: Settings, job_id: str) -> Path:
    """Where ``vft train --job-id {job_id}`` writes its checkpoints by default."""
    return settings.job_dir(job_id) / OUTPUT_FOLDER


def checkpoint_dir(output_dir: Path, epoch: int) -> Path:
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}{epoch}"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """The ``checkpoint-epoch-N`` folders in ``output_dir`` as (N, folder), oldest epoch first."""
    found = []
    if Path(output_dir).is_dir():
        for child in Path(output_dir).iterdir():
            match = _CHECKPOINT_NAME.fullmatch(child.name)
            if match and child.is_dir():
                found.append((int(match.group(1)), child))
    return sorted(found)


def has_model(folder: Path) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file()


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The highest-epoch checkpoint folder in ``output_dir`` that holds a model, None when there is none."""
    for _, folder in reversed(list_checkpoints(output_dir)):
        if has_model(folder):
            return folder
    return None
