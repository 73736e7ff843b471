"""The continuously batched decode loop of one resident model: its own thread over a fixed number of slots.

Callers (`fast_engine.routed`: upstream's ``generate_*`` in the caller's thread builds the prompt, then waits here)
`submit` a `decode.DecodeJob` with a seed per row. Between two frames the loop takes waiting requests, urgent ones
first (`urgency`: a consumer waits on them; a stream's look-ahead sentence waits while any urgent request does, and
gives its slot back to one that finds none free), first come, first served within each, as long as all of a
request's rows find free slots: it prefills them (upstream's talker forward) and writes them into their slots
(`slot_step.SlotDecoder.admit`). Then it runs one frame for every running row, reads the frame's end flags and
codes once, and hands each request its frames; a row that ended (EOS, frame bound) gives its slot back at once and
its codes go to its request then. A cancelled request's rows leave at the next frame boundary. Every voice on the
same weights shares the loop: the voice is in the prompt.

Requests hear of their rows through a queue of events, so callbacks (codec decoding for a stream, early results)
run in the requesting thread, never in the loop's.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from voicefinetune_inference import metrics
from voicefinetune_inference.engine import lora
from voicefinetune_inference.engine.cuda_graphs import StepGraphs
from voicefinetune_inference.engine.decode import DecodeJob
from voicefinetune_inference.engine.sampling import suppression_mask
from voicefinetune_inference.engine.slot_step import SlotDecoder
from voicefinetune_inference.engine.urgency import Urgency

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)  # batch sizes a step runs at (the smallest that holds the rows)
SPAN_STEP = 64  # attention spans are multiples of this many positions (fewer distinct shapes)
INITIAL_CAPACITY = 512  # positions per slot at first; a longer request grows every slot once


def bucket_for(rows: int, slots: int) -> int:
    return min(next((b for b in BUCKETS if b >= rows), slots), slots)


@dataclass(eq=False)  # each request is itself (its fields hold tensors)
class Request:
    """One call's rows in the loop. ``events`` carries ``("frame", frame, rows, codes)``, ``("row", row, codes)``
    for a row that ends before the others, then ``("end", codes_per_row)`` or ``("error", exception)``."""

    job: DecodeJob
    seeds: list[int]
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.monotonic)
    slots: dict[int, int] = field(default_factory=dict)  # slot -> row
    adapters: lora.AdapterRows | None = None  # LoRA voices: each row's adapter, as the caller set them
    urgency: Urgency = field(default_factory=Urgency)
    admitted: float = 0.0  # when its rows last took their slots
    codes: list[list[torch.Tensor]] = field(default_factory=list)
    frames: int = 0

    @property
    def rows(self) -> int:
        return int(self.job.inputs_embeds.shape[0])

    def cancel(self) -> None:
        self.cancelled.set()


class DecodeLoop:
    # LoRA rows: the caller's adapter rows go with its request into the slots (`lora.SlotAdapters`)
    takes_adapters = True

    def __init__(
        self,
        talker: Any,
        *,
        slots: int,
        name: str = "model",
        step_context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        graphs: StepGraphs | bool = True,
    ):
        self.talker = talker
        self.slots = max(1, slots)
        self.name = name
        # wraps each step (in the loop's thread): e.g. a dispatch mode that checks the step never syncs
        self.step_context = step_context or contextlib.nullcontext
        # each bucket's frame as a CUDA graph (True: on CUDA, False: never); without one every frame runs eagerly
        if not isinstance(graphs, StepGraphs):
            graphs = StepGraphs.for_talker(talker, enabled=graphs)
        self.graphs = graphs
        self._decoder: SlotDecoder | None = None
        self._free = list(range(self.slots))
        self._running: dict[int, Request] = {}  # slot -> request
        self._adapters = lora.SlotAdapters(self.slots)
        self._lengths = [0] * self.slots  # host copy of each slot's cache length
        self._waiting: deque[Request] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self.frames = 0  # frames run (one per step)
        self.row_frames = 0  # frames produced, summed over rows
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"vft-decode-{name}", daemon=True)
        self._thread.start()

    # --- callers --------------------------------------------------------------------------------------------------

    def submit(self, job: DecodeJob, seeds: list[int], urgency: Urgency | None = None) -> Request:
        request = Request(job, seeds, adapters=lora.current_rows(self.talker), urgency=urgency or Urgency())
        if request.rows > self.slots:
            raise ValueError(f"a request of {request.rows} rows does not fit {self.slots} decode slots")
        with self._changed:
            if self._closed:
                raise RuntimeError("the model's decode loop has stopped")
            self._waiting.append(request)
            self._changed.notify()
        return request

    def wake(self) -> None:
        """A request was cancelled: let the loop drop it even if it is idle."""
        with self._changed:
            self._changed.notify()

    @property
    def decoder(self) -> SlotDecoder | None:
        """The slot buffers and step (made with the first request, sized from its tensors)."""
        return self._decoder

    def status(self) -> dict[str, Any]:
        with self._changed:
            waiting = len(self._waiting)
            look_ahead = sum(not request.urgency.urgent for request in self._waiting)
        elapsed = max(time.monotonic() - self._started, 1e-9)
        return {
            "scheduler": "continuous",
            "slots": self.slots,
            "rows_running": len(self._running),
            "queue": waiting,
            "queue_look_ahead": look_ahead,  # of which a stream's sentences its client does not wait on yet
            "graphs": self.graphs.status(self._decoder),
            "frames_per_second": round(self.row_frames / elapsed, 2),
        }

    @property
    def stopped(self) -> bool:
        return not self._thread.is_alive()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    # --- the loop -------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._changed:
                    while not self._closed and not self._running and not self._waiting:
                        self._changed.wait()
                    if self._closed:
                        break
                try:
                    self._drop_cancelled()
                    self._admit()
                    if self._running:
                        self._frame()
                except Exception as exc:  # noqa: BLE001 - handed to every request in the loop
                    log.exception("decode loop of %s failed", self.name)
                    self._fail_all(exc)
            # still in inference mode: freeing slots writes their (inference) buffers
            self._fail_all(RuntimeError("the model's decode loop has stopped"))
            self.graphs.release()

    def _requests(self) -> list[Request]:
        """The requests holding slots, each once."""
        return list({id(r): r for r in self._running.values()}.values())

    def _take_slot(self) -> int:
        return heapq.heappop(self._free)

    def _give_back(self, slot: int) -> None:
        del self._running[slot]
        self._adapters.free(slot)
        if self._decoder is not None:
            self._decoder.free(slot)
        heapq.heappush(self._free, slot)
        metrics.ENGINE_SLOTS_OCCUPIED.labels(self.name).set(len(self._running))

    def _drop_cancelled(self) -> None:
        for request in [r for r in self._requests() if r.cancelled.is_set()]:
            for slot in list(request.slots):
                self._give_back(slot)
        with self._changed:
            cancelled = [r for r in self._waiting if r.cancelled.is_set()]
            for request in cancelled:
                self._waiting.remove(request)

    def _admit(self) -> None:
        while True:
            with self._changed:
                urgent = next((r for r in self._waiting if r.urgency.urgent), None)
                self._make_room(urgent)
                request = self._next(urgent)
                if request is None:
                    return
                self._waiting.remove(request)
            metrics.ENGINE_QUEUE_WAIT_SECONDS.observe(time.monotonic() - request.enqueued)
            try:
                self._prefill(request)
            except Exception as exc:  # noqa: BLE001 - that request's failure
                for slot in list(request.slots):
                    self._give_back(slot)
                request.events.put(("error", exc))

    def _next(self, urgent: Request | None) -> Request | None:
        """(under the lock) The request to admit now: the first ``urgent`` one, else (none waits) the first
        look-ahead one; None when its rows do not fit the free slots (then no later request passes it)."""
        first = urgent if urgent is not None else (self._waiting[0] if self._waiting else None)
        return first if first is not None and first.rows <= len(self._free) else None

    def _make_room(self, urgent: Request | None) -> None:
        """(under the lock) When the first ``urgent`` request's rows do not fit, take look-ahead requests (the
        latest admitted first) back out of their slots: they wait again at their place in the queue and later redo
        their frames, the same codes (a seeded row does not depend on when it runs), which their callers skip."""
        if urgent is None or urgent.rows <= len(self._free):
            return
        # only requests whose rows all still run: a row that ended has handed over its codes
        movable = sorted(
            (r for r in self._requests() if not r.urgency.urgent and len(r.slots) == r.rows),
            key=lambda r: r.admitted,
        )
        if urgent.rows > len(self._free) + sum(r.rows for r in movable):
            return
        while urgent.rows > len(self._free):
            request = movable.pop()
            for slot in list(request.slots):
                self._give_back(slot)
            request.slots.clear()
            later = (i for i, r in enumerate(self._waiting) if r.enqueued > request.enqueued)
            self._waiting.insert(next(later, len(self._waiting)), request)

    def _prefill(self, request: Request) -> None:
        job = request.job
        embeds, mask = job.inputs_embeds, job.attention_mask
        rows, length, _ = embeds.shape
        with lora.using(self.talker, request.adapters):
            prefill = self.talker(
                inputs_embeds=embeds,
                attention_mask=mask,
                use_cache=True,
                cache_position=torch.arange(length, device=embeds.device),
                trailing_text_hidden=job.trailing_text_hidden,
                tts_pad_embed=job.tts_pad_embed,
            )
        valid = [int(n) for n in mask.sum(dim=1).tolist()]
        deltas = [int(d) for d in self.talker.rope_deltas.view(-1).tolist()]
        need = max(valid) + max(job.frame_limits) + 2
        if self._decoder is None:
            capacity = max(INITIAL_CAPACITY, -(-need // SPAN_STEP) * SPAN_STEP)
            self._decoder = SlotDecoder(self.talker, slots=self.slots, capacity=capacity, like=embeds)
        decoder = self._decoder
        if need > decoder.capacity:
            decoder.grow(max(need, 2 * decoder.capacity))
        if not self._running:  # recording runs the step: only while no row holds a slot
            self.graphs.capture(decoder, {bucket_for(rows, self.slots) for rows in range(1, self.slots + 1)})
        suppressed = suppression_mask(self.talker.config.vocab_size, job.suppress_ids, embeds.device)
        cache = prefill.past_key_values
        request.codes = [[] for _ in range(rows)]
        request.admitted = time.monotonic()
        for row in range(rows):
            slot = self._take_slot()
            request.slots[slot] = row
            self._running[slot] = request
            self._adapters.assign(slot, request.adapters, row)
            start = length - valid[row]
            decoder.admit(
                slot,
                keys=[layer.keys[row, :, start:] for layer in cache.layers],
                values=[layer.values[row, :, start:] for layer in cache.layers],
                logits=prefill.logits[row, -1].float(),
                past_hidden=prefill.past_hidden[row],
                start=length + deltas[row],
                trailing=job.trailing_text_hidden[row],
                pad=job.tts_pad_embed.view(-1),
                limit=job.frame_limits[row],
                min_new=job.min_new_tokens,
                eos=job.eos_id,
                penalty=job.repetition_penalty,
                suppressed=suppressed,
                talker=job.talker,
                predictor=job.predictor,
                seed=request.seeds[row],
            )
            self._lengths[slot] = valid[row]
        metrics.ENGINE_SLOTS_OCCUPIED.labels(self.name).set(len(self._running))

    def _frame(self) -> None:
        decoder = self._decoder
        assert decoder is not None
        bucket = bucket_for(max(self._running) + 1, self.slots)
        longest = max(self._lengths[slot] for slot in self._running) + 1
        span = min(decoder.capacity, -(-longest // SPAN_STEP) * SPAN_STEP)
        adapters = self._adapters.rows()  # read on the host before the step, never inside it
        with lora.using(self.talker, adapters), self.step_context():
            # LoRA rows' adapters are host state a graph would freeze: their frames run eagerly
            self.graphs.frame(decoder, bucket, span, replay=adapters is None)
        # the one read per frame: which rows ended, and their codes (a copy: the buffer is the next step's)
        out = decoder.out[:bucket].to("cpu", copy=True)
        self.frames += 1
        produced: dict[int, tuple[Request, list[int]]] = {}
        for slot, request in list(self._running.items()):
            row = request.slots[slot]
            if bool(out[slot, 0]):
                del request.slots[slot]
                self._give_back(slot)
                self._row_ended(request, row)
                continue
            self._lengths[slot] += 1
            request.codes[row].append(out[slot, 1:])
            produced.setdefault(id(request), (request, []))[1].append(row)
        for request, rows in produced.values():
            self.row_frames += len(rows)
            metrics.ENGINE_FRAMES.labels(self.name).inc(len(rows))
            codes = torch.stack([request.codes[row][-1] for row in rows])
            request.events.put(("frame", len(request.codes[rows[0]]) - 1, torch.tensor(rows), codes))

    def _row_ended(self, request: Request, row: int) -> None:
        groups = self.talker.config.num_code_groups
        done = [torch.stack(c) if c else torch.empty(0, groups, dtype=torch.long) for c in request.codes]
        if request.slots:
            request.events.put(("row", row, done[row]))
        else:
            request.events.put(("end", done))

    def _fail_all(self, exc: BaseException) -> None:
        for request in self._requests():
            for slot in list(request.slots):
                self._give_back(slot)
            request.events.put(("error", exc))
        with self._changed:
            waiting, self._waiting = list(self._waiting), deque()
        for request in waiting:
            request.events.put(("error", exc))
