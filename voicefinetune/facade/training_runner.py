"""One `vft train` child process: start it, turn its JSON progress lines into events, cancel it.

The child runs in its own process group (so a cancel ends everything it started, data loaders included) and, on
Linux, dies with the server (``PR_SET_PDEATHSIG``) so that a killed server never leaves a training holding the GPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..lifecycle import STAGE_DONE, STAGE_FAILED
from ..train_request import TrainRequest

log = logging.getLogger(__name__)

CANCEL_GRACE_SECONDS = 5.0
STDOUT_LINE_LIMIT = 1024 * 1024
ERROR_TAIL_LINES = 8

ProgressEvent = dict[str, Any]


def parse_event(line: str) -> ProgressEvent | None:
    """A progress event from one stdout line, or None for anything that is not a JSON object with a stage."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("stage"), str) else None


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel for SIGKILL when the server process goes away."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


@dataclass
class TrainingOutcome:
    returncode: int
    last_event: ProgressEvent | None
    error: str | None
    cancelled: bool

    @property
    def succeeded(self) -> bool:
        return (
            not self.cancelled
            and self.returncode == 0
            and self.last_event is not None
            and self.last_event.get("stage") == STAGE_DONE
        )


class TrainingProcess:
    def __init__(
        self,
        request: TrainRequest,
        env: dict[str, str],
        log_path: Path,
        on_event: Callable[[ProgressEvent], None],
    ):
        self.request = request
        self.env = env
        self.log_path = log_path
        self.on_event = on_event
        self.process: asyncio.subprocess.Process | None = None
        self._cancelled = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in run()
        self.process = await asyncio.create_subprocess_exec(
            *self.request.local_command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            limit=STDOUT_LINE_LIMIT,
        )
        return self.process.pid

    async def run(self) -> TrainingOutcome:
        """Read progress until the child exits; ``start()`` first."""
        assert self.process is not None and self.process.stdout is not None
        last_event: ProgressEvent | None = None
        try:
            while True:
                try:
                    raw = await self.process.stdout.readline()
                except ValueError:  # a line over the limit: skip it, keep reading
                    continue
                if not raw:
                    break
                self._log.write(raw)
                event = parse_event(raw.decode("utf-8", errors="replace"))
                if event is not None:
                    last_event = event
                    try:
                        self.on_event(event)
                    except (
                        Exception
                    ):  # a bug in bookkeeping (a failing write, an odd value) never kills the training
                        log.exception("progress handler failed for job %s", self.request.job_id)
            returncode = await self.process.wait()
        finally:
            self._log.flush()
            self._log.close()
        return TrainingOutcome(returncode, last_event, self._error(returncode, last_event), self._cancelled)

    def _error(self, returncode: int, last_event: ProgressEvent | None) -> str | None:
        if self._cancelled:
            return "cancelled"
        if last_event is not None and last_event.get("stage") == STAGE_FAILED:
            return str(last_event.get("error") or "training failed")
        if returncode == 0 and last_event is not None and last_event.get("stage") == STAGE_DONE:
            return None
        tail = self._log_tail()
        reason = f"exited with code {returncode}" if returncode >= 0 else f"killed by signal {-returncode}"
        if returncode == 0:
            reason = "exited without reporting completion"
        return f"vft train {reason}" + (f": {tail}" if tail else "")

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in lines[-ERROR_TAIL_LINES:] if line.strip())

    def kill(self) -> None:
        """SIGKILL the process group at once (no waiting); for paths that cannot await."""
        if self.process is not None and self.process.returncode is None:
            self._cancelled = True
            kill_group(self.process.pid, signal.SIGKILL)

    async def cancel(self, grace: float = CANCEL_GRACE_SECONDS) -> None:
        """End the whole process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.process is None or self.process.returncode is not None:
            return
        self._cancelled = True
        kill_group(self.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            kill_group(self.process.pid, signal.SIGKILL)
            await self.process.wait()
        # Children that ignored SIGTERM while the leader exited still belong to the group.
        kill_group(self.process.pid, signal.SIGKILL)


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def is_our_training(pid: int, job_id: str) -> bool:
    """True when ``pid`` is alive and is a `vft train` for ``job_id`` (guards against reused pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"train" in cmdline and job_id.encode() in cmdline


def reap_orphan(pid: int | None, job_id: str) -> bool:
    """Kill a training left over from a previous server process; True when there was one."""
    if pid is None or not is_our_training(pid, job_id):
        return False
    kill_group(pid, signal.SIGKILL)
    return True
