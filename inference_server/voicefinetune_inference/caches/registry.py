"""Which job ids are servable: speaker name and checkpoint location, persisted in ``state/voices.json``."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class Voice:
    job_id: str
    speaker_name: str
    checkpoint_path: str | None = None  # local model folder (absolute)
    s3_prefix: str | None = None  # where S3 holds the same folder
    registered_at: float = field(default_factory=time.time)
    last_used: float | None = None  # last request; drives the disk LRU


class VoiceRegistry:
    """A small dict of voices written atomically on every change (and on ``flush`` for last-use times)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._voices: dict[str, Voice] = {}
        if path.exists():
            known = {f.name for f in fields(Voice)}
            for job_id, record in json.loads(path.read_text(encoding="utf-8")).items():
                values = {k: v for k, v in record.items() if k in known and k != "job_id"}
                self._voices[job_id] = Voice(job_id=job_id, **values)

    def get(self, job_id: str) -> Voice | None:
        return self._voices.get(job_id)

    def all(self) -> list[Voice]:
        return sorted(self._voices.values(), key=lambda v: v.job_id)

    def put(self, voice: Voice) -> None:
        with self._lock:
            self._voices[voice.job_id] = voice
            self._write()

    def remove(self, job_id: str) -> Voice | None:
        with self._lock:
            voice = self._voices.pop(job_id, None)
            if voice is not None:
                self._write()
            return voice

    def touch(self, job_id: str) -> None:
        """Remember a use in memory; written with the next change or ``flush``."""
        voice = self._voices.get(job_id)
        if voice is not None:
            voice.last_used = time.time()

    def flush(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        payload = {job_id: asdict(voice) for job_id, voice in sorted(self._voices.items())}
        staging.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        staging.replace(self.path)
