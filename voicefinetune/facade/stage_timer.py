"""Ops-log operations of a training's stages, listed in ``/ops/running`` while they run."""

from __future__ import annotations

from ..lifecycle import STAGE_FAILED, STAGE_PREPARING, STAGE_TRAINING
from ..opslog import OpsLog


class StageTimer:
    """Turns stage transitions into ops-log operations: ``prepare_data`` (preparing) and ``training``."""

    OPS = {STAGE_PREPARING: "prepare_data", STAGE_TRAINING: "training"}

    def __init__(self, opslog: OpsLog, job_id: str):
        self.opslog = opslog
        self.job_id = job_id
        self.stage: str | None = None
        self.op_id: int | None = None

    def enter(self, stage: str) -> None:
        if stage == self.stage:
            return
        self._close(ok=stage != STAGE_FAILED)
        self.stage = stage
        op = self.OPS.get(stage)
        if op is not None:
            self.op_id = self.opslog.start(op, self.job_id)

    def finish(self, ok: bool) -> None:
        """End the current stage (a no-op once ended)."""
        self._close(ok)
        self.stage = None

    def _close(self, ok: bool) -> None:
        if self.op_id is not None:
            self.opslog.finish(self.op_id, ok=ok)
            self.op_id = None
