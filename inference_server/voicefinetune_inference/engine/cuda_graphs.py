"""CUDA graphs of a continuous decode loop's frame step, per batch-size bucket (with the draws and without, for
buckets of greedy rows), replayed every frame.

A frame (`slot_step.SlotDecoder.frame`: codebook 0, the code predictor's 15 steps, one talker step) reads and writes
only the decoder's fixed buffers, so it can be recorded once per bucket and replayed: rows join by `admit` copying
into the slot buffers, and the replay reads them there. `StepGraphs` does the recording through a `Recorder`:
`CudaRecorder` (``torch.cuda.CUDAGraph``, warmed up on a side stream, every bucket's graph in one memory pool per
model) on CUDA with ``VFT_CUDA_GRAPHS`` on; elsewhere there is none and every frame runs eagerly, the same code.

Recording runs the step for real (the CUDA warm-up does; a test double may), so it happens only while no row holds a
slot: when the loop has just made its buffers and when it is idle again after they grew (a request longer than any
before). The graphs attend over the whole slot capacity (positions past a row's length are masked, as in an eager
step over a shorter span). Frames with LoRA rows run eagerly: which adapter each row uses is host state that a
graph would freeze.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch

from voicefinetune_inference.engine.slot_step import SlotDecoder

log = logging.getLogger(__name__)

WARMUP_STEPS = 1  # eager runs on the side stream before each capture (lazy initialisation, kernel choices)


class Recorder(Protocol):
    """Records a step once; what ``record`` returns replays it on the very same buffers."""

    def record(self, step: Callable[[], None]) -> Callable[[], None]: ...

    def held_bytes(self) -> int:
        """Memory the recorded graphs hold (their pool)."""
        ...

    def release(self) -> None:
        """Drop every recorded graph and its memory."""
        ...


class CudaRecorder:
    """``torch.cuda.CUDAGraph`` per step, all in one private memory pool (the graphs' intermediates; their results
    are the decoder's buffers, outside it, so the graphs may replay in any order); its size is the sum of the
    allocator's segments that belong to the pool."""

    def __init__(self, device: torch.device):
        self.device = torch.device(
            "cuda", torch.cuda.current_device() if device.index is None else device.index
        )
        self.stream = torch.cuda.Stream(self.device)
        self.pool: Any = torch.cuda.graph_pool_handle()
        self.graphs: list[torch.cuda.CUDAGraph] = []
        self.bytes = 0

    def record(self, step: Callable[[], None]) -> Callable[[], None]:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            for _ in range(WARMUP_STEPS):
                step()
        current.wait_stream(self.stream)
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other models' decode loops keep running in their threads while this one captures
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
            step()
        torch.cuda.synchronize(self.device)
        self.graphs.append(graph)
        self.bytes = sum(
            segment["total_size"]
            for segment in torch.cuda.memory_snapshot()
            if tuple(segment["segment_pool_id"]) == tuple(self.pool)
            and segment["device"] == self.device.index
        )
        return graph.replay

    def held_bytes(self) -> int:
        return self.bytes

    def release(self) -> None:
        self.graphs.clear()
        self.pool = torch.cuda.graph_pool_handle()  # the old pool goes with its last graph
        self.bytes = 0


class StepGraphs:
    """One decode loop's graphs: recorded per bucket while no row runs, replayed per frame, released with the loop."""

    def __init__(self, recorder: Recorder | None, reason: str | None = None):
        self.recorder = recorder
        self.reason = (
            reason  # why nothing is recorded: "disabled", "cpu", "released", "capture failed: ...", ...
        )
        self._replays: dict[tuple[int, bool], Callable[[], None]] = {}  # (bucket, sampling) -> replay
        self._capacity = 0  # the slot capacity the graphs were recorded at
        self.replayed = 0  # frames run by replaying a graph

    @classmethod
    def for_talker(cls, talker: Any, *, enabled: bool) -> StepGraphs:
        """Graphs on CUDA when ``enabled`` (``VFT_CUDA_GRAPHS``); otherwise none and the reason."""
        if not enabled:
            return cls(None, "disabled")
        if "flash" in talker.config._attn_implementation:
            # Hugging Face's flash attention unpads the talker's 2D mask with host reads (`.item()`, `nonzero`):
            # such a step cannot be captured (graphs need `flash_attn_with_kvcache` with device-side lengths)
            return cls(None, "flash attention reads the mask on the host")
        device = next(talker.parameters()).device
        if device.type != "cuda":
            return cls(None, device.type)
        return cls(CudaRecorder(device))

    def capture(self, decoder: SlotDecoder, buckets: Iterable[int]) -> None:
        """(no row holds a slot) Record a frame per bucket over the whole capacity, unless that is done already."""
        if self.recorder is None or self._current(decoder):
            return
        self._forget()
        capacity = decoder.capacity
        try:
            # the largest bucket first (the others reuse its blocks); a bucket of greedy rows leaves out the draws
            for bucket in sorted(set(buckets), reverse=True):
                for sampling in (True, False):
                    step = functools.partial(decoder.frame, bucket, capacity, sampling=sampling)
                    self._replays[bucket, sampling] = self.recorder.record(step)
        except Exception as exc:  # noqa: BLE001 - the loop goes on eagerly
            log.exception("recording the decode step's graphs failed: every frame runs eagerly")
            self._forget()
            self.recorder, self.reason = None, f"capture failed: {exc}"
            return
        self._capacity = capacity

    def frame(self, decoder: SlotDecoder, bucket: int, span: int, *, replay: bool = True) -> None:
        """One frame over slots ``[0, bucket)``: its graph's replay when there is one (and ``replay``), else eager."""
        if self._replays and not self._current(decoder):
            self._forget()  # the buffers grew: the graphs read the old ones (recorded again when the loop is idle)
        sampling = decoder.samples(bucket)  # host state: whether a row of the bucket samples
        if replay and (bucket, sampling) in self._replays:
            self._replays[bucket, sampling]()
            self.replayed += 1
        else:
            decoder.frame(bucket, span, sampling=sampling)

    def status(self, decoder: SlotDecoder | None) -> dict[str, Any]:
        captured = decoder is not None and self._current(decoder)
        reason = self.reason
        if reason is None:
            reason = "no request yet" if decoder is None else "buffers grew: recorded again when idle"
        return {
            "captured": captured,
            "buckets": sorted({bucket for bucket, _ in self._replays}) if captured else [],
            "bytes": self.recorder.held_bytes() if self.recorder is not None else 0,
            "frames_replayed": self.replayed,
            "reason": None if captured else reason,
        }

    def release(self) -> None:
        """(the loop has stopped) Drop the graphs and their memory."""
        self._forget()
        self.reason = "released"

    def _current(self, decoder: SlotDecoder) -> bool:
        """Graphs are recorded, over ``decoder``'s buffers as they are now."""
        return bool(self._replays) and decoder.capacity == self._capacity

    def _forget(self) -> None:
        self._replays = {}
        self._capacity = 0
        if self.recorder is not None:
            self.recorder.release()
