"""A training job's progress events: the six progress fields and the time on every event, and once the model is
loaded the attention it runs with (``flash_attn``); the texts a client sees (the job's error, warnings and
messages) made fit to show."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from voicefinetune.lifecycle import FLASH_ATTN_EVENT, STAGE_PREPARING
from voicefinetune_trainer.reporter import Event, Reporter

SHOWN_TEXTS = ("error", "warning", "message")


class Progress:
    """The job's current counters; every event it emits carries all six progress fields and the time."""

    def __init__(
        self, reporter: Reporter, job_id: str, total_epochs: int, public: Callable[[str], str] = str
    ):
        self.reporter = reporter
        self.public = public  # makes the texts of SHOWN_TEXTS fit to show a client
        self.job_id = job_id
        self.stage = STAGE_PREPARING
        self.epoch = 0
        self.total_epochs = total_epochs
        self.step = 0
        self.loss: float | None = None
        self.global_step = 0
        self.flash_attention: bool | None = None  # known once the model is loaded
        self.timings: dict[str, float] = {}
        self._stage_started = time.monotonic()

    def event(self, **extra: Any) -> Event:
        event: Event = {
            "stage": self.stage,
            "epoch": self.epoch,
            "total_epochs": self.total_epochs,
            "step": self.step,
            "loss": self.loss,
            "global_step": self.global_step,
            "job_id": self.job_id,
            "time": round(time.time(), 3),
        }
        if self.flash_attention is not None:
            event[FLASH_ATTN_EVENT] = self.flash_attention
        event.update(
            {
                key: self.public(value) if key in SHOWN_TEXTS and isinstance(value, str) else value
                for key, value in extra.items()
                if value is not None
            }
        )
        self.reporter.emit(event)
        return event

    def enter(self, stage: str, **extra: Any) -> Event:
        """Close the current stage's timing, switch stage and emit."""
        now = time.monotonic()
        self.timings[self.stage] = round(self.timings.get(self.stage, 0.0) + now - self._stage_started, 3)
        self.stage, self._stage_started = stage, now
        return self.event(**extra)

    def training_step(self, step_event: Any) -> None:
        self.epoch = step_event.epoch
        self.total_epochs = step_event.total_epochs
        self.step = step_event.step
        self.global_step = step_event.global_step
        self.loss = None if step_event.loss is None else float(step_event.loss)
        self.event()
