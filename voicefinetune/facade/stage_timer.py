"""Ops-log durations of a training's stages."""

from __future__ import annotations

import time

from ..lifecycle import STAGE_FAILED, STAGE_PREPARING, STAGE_TRAINING
from ..opslog import OpsLog


class StageTimer:
    """Turns stage transitions into ops-log durations: ``prepare_data`` (preparing) and ``training``."""

    OPS = {STAGE_PREPARING: "prepare_data", STAGE_TRAINING: "training"}

    def __init__(self, opslog: OpsLog, job_id: str):
        self.opslog = opslog
        self.job_id = job_id
        self.stage: str | None = None
        self.since = 0.0

    def enter(self, stage: str) -> None:
        if stage == self.stage:
            return
        self._close(ok=stage != STAGE_FAILED)
        self.stage, self.since = stage, time.monotonic()

    def finish(self, ok: bool) -> None:
        self._close(ok)
        self.stage = None

    def _close(self, ok: bool) -> None:
        op = self.OPS.get(self.stage or "")
        if op is not None:
            self.opslog.record(op, time.monotonic() - self.since, self.job_id, ok=ok)
            self.stage = None
