"""What a dataset zip must hold at its top, checked from the archive's directory alone: no audio library is needed,
so the Kubernetes facade (no ML stack) refuses a bad upload with it before queueing the job."""

from __future__ import annotations

from pathlib import Path

from .schemas import InvalidInput
from .zipsafe import inspect_zip

MANIFEST = "train.jsonl"


def check_layout(path: Path) -> None:
    """Refuse a zip that is unsafe or has no train.jsonl at its top or in its one folder (the original service's 400)."""
    members = inspect_zip(path)
    if not any(m.name == MANIFEST and len(m.parts) <= 2 for m in members):
        raise InvalidInput(
            "Invalid dataset zip (missing train.jsonl): put train.jsonl and data/*.wav in the zip"
        )
