"""Durations of named operations (prepare_data, training, model_load, inference_*, s3_upload...).

Each finished operation is one JSON line appended to ``state/ops.jsonl``; averages and history are served from
memory and survive restarts by replaying that file.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HISTORY_IN_MEMORY = 10_000


class OpsLog:
    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._running: dict[int, dict[str, Any]] = {}
        self._clocks: dict[int, float] = {}  # monotonic start of each running operation
        self._history: list[dict[str, Any]] = []
        self._totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._replay(path)

    def _replay(self, path: Path) -> None:
        if not path.exists():
            return
        with open(
            path, "rb+"
        ) as handle:  # end a line torn by a crash, so the next record starts on its own line
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    self._remember(json.loads(line))
                except (ValueError, KeyError):
                    continue  # a torn last line after a crash

    def _remember(self, record: dict[str, Any]) -> None:
        if record.get("ok", True):  # a failed operation's duration says nothing about how long the work takes
            total = self._totals[record["op_name"]]
            total[0] += record["duration_seconds"]
            total[1] += 1
        self._history.append(record)
        if len(self._history) > HISTORY_IN_MEMORY:
            del self._history[: len(self._history) - HISTORY_IN_MEMORY]

    def record(
        self, op_name: str, duration_seconds: float, job_id: str | None = None, **details: Any
    ) -> None:
        """Record an operation that already finished."""
        record = {
            "op_name": op_name,
            "job_id": job_id,
            "started_at": time.time() - duration_seconds,
            "duration_seconds": round(duration_seconds, 6),
            **details,
        }
        with self._lock:
            self._remember(record)
            if self.path is not None:
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")

    def start(self, op_name: str, job_id: str | None = None, **details: Any) -> int:
        """Begin an operation: it shows in ``running()`` until ``finish`` records it; returns its id."""
        op_id = next(self._ids)
        entry = {"op_name": op_name, "job_id": job_id, "started_at": time.time(), **details}
        with self._lock:
            self._running[op_id] = entry
            self._clocks[op_id] = time.monotonic()
        return op_id

    def finish(self, op_id: int, *, ok: bool = True) -> None:
        """Record the operation ``start`` began (once; later calls do nothing). Failed ones get ``ok: false``."""
        with self._lock:
            entry = self._running.pop(op_id, None)
            started = self._clocks.pop(op_id, None)
        if entry is None or started is None:
            return
        details = {k: v for k, v in entry.items() if k not in ("op_name", "job_id", "started_at")}
        self.record(entry["op_name"], time.monotonic() - started, entry["job_id"], ok=ok, **details)

    @contextmanager
    def track(self, op_name: str, job_id: str | None = None, **details: Any) -> Iterator[dict[str, Any]]:
        """Time the block; it shows in ``running()`` meanwhile. Failed operations are recorded with ``ok: false``."""
        op_id = self.start(op_name, job_id, **details)
        ok = False
        try:
            yield self._running[op_id]
            ok = True
        finally:
            self.finish(op_id, ok=ok)

    def averages(self) -> dict[str, dict[str, float | int]]:
        with self._lock:
            return {
                name: {"avg_seconds": round(total / count, 4), "count": count}
                for name, (total, count) in sorted(self._totals.items())
                if count
            }

    def history(
        self, job_id: str | None = None, op_name: str | None = None, limit: int | None = None
    ) -> list[dict]:
        """Newest first."""
        with self._lock:
            records = [
                r
                for r in reversed(self._history)
                if (job_id is None or r.get("job_id") == job_id)
                and (op_name is None or r["op_name"] == op_name)
            ]
        return records[:limit] if limit is not None else records

    def running(self) -> list[dict[str, Any]]:
        now = time.time()
        with self._lock:
            return [
                {**entry, "elapsed_seconds": round(now - entry["started_at"], 3)}
                for entry in self._running.values()
            ]
