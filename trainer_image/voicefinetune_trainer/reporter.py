"""Where progress events go: JSON lines on stdout (always), an HTTP endpoint (optional), or both.

An event is a dict with at least ``stage, epoch, total_epochs, step, loss, global_step``. Remote reporting is
best effort: it runs on its own thread, coalesces training events to at most one per ``min_interval`` seconds,
always sends stage changes, and logs (never raises) when the endpoint fails, so it can never stop training.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import IO, Any, Protocol

from voicefinetune.lifecycle import STAGE_TRAINING

log = logging.getLogger(__name__)


Event = dict[str, Any]


class Reporter(Protocol):
    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class JsonLinesReporter:
    """One JSON object per line, flushed at once (the parent process reads them as they come)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def emit(self, event: Event) -> None:
        self.stream.write(json.dumps(event, default=str) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class HttpReporter:
    """POSTs events as JSON to ``url`` (bearer ``token`` when given) from a background thread."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        min_interval: float = 1.0,
        timeout: float = 5.0,
        close_timeout: float = 10.0,
    ):
        self.url = url
        self.min_interval = min_interval
        self.timeout = timeout
        self.close_timeout = close_timeout
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.sent = 0
        self.failed = 0
        self._queue: deque[Event] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._last_training_post = 0.0
        self._thread = threading.Thread(target=self._run, name="progress-http", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> None:
        with self._wake:
            # A newer training event replaces a queued one: only the latest counters matter.
            if (
                self._queue
                and event.get("stage") == STAGE_TRAINING
                and self._queue[-1].get("stage") == STAGE_TRAINING
            ):
                self._queue[-1] = event
            else:
                self._queue.append(event)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(self.close_timeout)
        if self._thread.is_alive():
            log.warning(
                "progress endpoint %s: gave up sending the last events after %.0f s",
                self.url,
                self.close_timeout,
            )

    def _next(self) -> Event | None:
        with self._wake:
            while True:
                if self._queue:
                    head = self._queue[0]
                    wait = self._last_training_post + self.min_interval - time.monotonic()
                    # Throttle only training events that more events would supersede; the last one always goes.
                    if (
                        head.get("stage") == STAGE_TRAINING
                        and wait > 0
                        and not self._closing
                        and len(self._queue) == 1
                    ):
                        self._wake.wait(wait)
                        continue
                    return self._queue.popleft()
                if self._closing:
                    return None
                self._wake.wait()

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout, headers=self.headers) as client:
            while (event := self._next()) is not None:
                if event.get("stage") == STAGE_TRAINING:
                    self._last_training_post = time.monotonic()
                try:
                    response = client.post(self.url, content=json.dumps(event, default=str))
                    response.raise_for_status()
                    self.sent += 1
                except Exception as exc:  # never fatal: report and go on
                    self.failed += 1
                    log.warning("progress endpoint %s failed (%s); training goes on", self.url, exc)


class FanOutReporter:
    """Sends each event to every reporter; one reporter failing does not affect the others."""

    def __init__(self, reporters: list[Reporter]):
        self.reporters = reporters

    def emit(self, event: Event) -> None:
        for reporter in self.reporters:
            try:
                reporter.emit(event)
            except Exception as exc:
                log.warning("progress reporter %s failed: %s", type(reporter).__name__, exc)

    def close(self) -> None:
        for reporter in self.reporters:
            try:
                reporter.close()
            except Exception as exc:
                log.warning("progress reporter %s failed to close: %s", type(reporter).__name__, exc)
