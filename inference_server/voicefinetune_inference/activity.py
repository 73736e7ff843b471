"""Request bookkeeping: how many requests came, how many run now, and when the last one started or ended."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from voicefinetune.opslog import OpsLog


class RequestActivity:
    def __init__(self, opslog: OpsLog):
        self.opslog = opslog
        self.total_requests = 0
        self.in_flight = 0
        self.last_activity = time.monotonic()

    @contextlib.contextmanager
    def track(self, op_name: str, job_id: str | None, **details: Any) -> Iterator[None]:
        """Count a request, keep the idle timer from firing while it runs, and time it in the ops log."""
        self.total_requests += 1
        self.in_flight += 1
        self.last_activity = time.monotonic()
        try:
            with self.opslog.track(op_name, job_id=job_id, **details):
                yield
        finally:
            self.in_flight -= 1
            self.last_activity = time.monotonic()

    def idle_seconds(self) -> float:
        return 0.0 if self.in_flight else time.monotonic() - self.last_activity
