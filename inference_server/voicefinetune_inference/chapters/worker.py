"""`ChapterWorker`: runs chapters. Segments go through the normal engine path (`Generator.generate`, so concurrent
segments fuse into batched calls with each other and with other traffic), each stored in S3 as it completes; when all
are done they are joined and the file, its manifest and subtitles written. The state lives in S3 (`store`): a
restarted process resumes its unfinished chapters without redoing their done segments, and a chapter whose owner
stopped renewing its heartbeat is taken over by another process.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import soundfile as sf

from voicefinetune.schemas import SAMPLE_RATE, InvalidInput
from voicefinetune.seeds import derived_seed
from voicefinetune.webhooks import WebhookSender, check_webhook_url, event_body
from voicefinetune_inference.chapters import metrics
from voicefinetune_inference.chapters.assembly import ChapterLayout, clear_scratch, publish_chapter
from voicefinetune_inference.chapters.joining import placements
from voicefinetune_inference.chapters.planning import (
    check_synthesis_id,
    new_synthesis_id,
    output_keys,
    plan_chapter,
)
from voicefinetune_inference.chapters.protocol import (
    ACTIVE_STATUSES,
    RegenerateRequest,
    SynthesisOutput,
    SynthesisProgress,
    SynthesisRequest,
    SynthesisStatus,
)
from voicefinetune_inference.chapters.quality import MAX_ATTEMPTS, DurationNorms
from voicefinetune_inference.chapters.segmenting import Segment
from voicefinetune_inference.chapters.store import ChapterStore
from voicefinetune_inference.chapters.subtitles import srt, webvtt
from voicefinetune_inference.errors import message_for
from voicefinetune_inference.openai_api.protocol import OpenAIError
from voicefinetune_inference.openai_api.voices import OpenAIVoices, ResolvedVoice
from voicefinetune_inference.serving.service import InferenceService

log = logging.getLogger(__name__)

DESIGN_PREFIX = "design:"
IN_FLIGHT = 32  # segments of one chapter generating at once: enough to fill the batcher's fused calls
HEARTBEAT_SECONDS = 10.0
LEASE_SECONDS = 120.0  # a chapter whose owner has not saved it for this long is taken over


class SynthesisNotFound(LookupError):
    pass


class SynthesisConflict(RuntimeError):
    pass


class SynthesisCancelled(Exception):
    """Another process cancelled, deleted or took over the chapter (its state in S3 says so)."""


@dataclass
class _Running:
    task: asyncio.Task[None]
    state: dict[str, Any]
    pending: int = 0


class ChapterWorker:
    def __init__(self, service: InferenceService, owner: str | None = None):
        self.settings = service.settings
        self.service = service
        self.store = ChapterStore(service.storage)
        self.voices = OpenAIVoices(service.settings, service.catalog, service.speech.loader)
        self.webhooks = WebhookSender(service.settings)
        self.owner = owner or socket.gethostname()
        self._running: dict[str, _Running] = {}
        self._locks: dict[str, asyncio.Lock] = {}  # one state write at a time
        self._transitions: dict[str, asyncio.Lock] = {}  # one start, cancel or delete at a time
        self._resumer: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(clear_scratch, self.settings.data_dir)
        if self.service.storage.configured:
            self._resumer = asyncio.create_task(self._resume_loop())

    async def stop(self) -> None:
        if self._resumer is not None:
            self._resumer.cancel()
        tasks = [running.task for running in self._running.values()]
        for task in tasks:  # their state stays "running": the next start resumes them
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.webhooks.close()

    async def _resume_loop(self) -> None:
        while True:
            try:
                await self.resume(await asyncio.to_thread(self.store.states))
            except Exception:  # noqa: BLE001 - S3 away for a moment: the next round tries again
                log.exception("resuming chapters failed")
            await asyncio.sleep(LEASE_SECONDS / 2)

    async def resume(self, listed: list[dict[str, Any]]) -> None:
        """Run the chapters among ``listed`` (states read from S3) that are unfinished and have no live owner.
        Each is read again before it is taken up (a DELETE may have ended it since the listing) and claimed with a
        conditional write of that version: of two processes that find a chapter stale at once, one runs it."""
        for candidate in listed:
            if self._orphaned(candidate):
                try:
                    async with self._transition(candidate["synthesis_id"]):
                        await self._take_over(candidate["synthesis_id"])
                except Exception:  # noqa: BLE001 - the others are still taken up; the next round tries again
                    log.exception("taking chapter %s over failed", candidate["synthesis_id"])

    async def _take_over(self, synthesis_id: str) -> None:
        read = await asyncio.to_thread(self.store.versioned_state, synthesis_id)
        if read is None or not self._orphaned(read[0]):
            return
        state, version = read
        # its last heartbeat may predate segments done since: a status read before `_work` counts them is right
        done = await asyncio.to_thread(self.store.done_segments, synthesis_id)
        state.update(owner=self.owner, updated_at=time.time(), done_segments=len(done))
        if not await asyncio.to_thread(self.store.claim, synthesis_id, state, version):
            log.info("chapter %s was taken over by another process first", synthesis_id)
            return
        log.info("resuming chapter %s (%s)", synthesis_id, state["status"])
        self._start(state)

    def _orphaned(self, state: dict[str, Any]) -> bool:
        if state["status"] not in ACTIVE_STATUSES or state["synthesis_id"] in self._running:
            return False
        return state.get("owner") == self.owner or time.time() - state["updated_at"] > LEASE_SECONDS

    # --- requests --------------------------------------------------------------------------------------------

    async def submit(self, request: SynthesisRequest) -> SynthesisStatus:
        self.service.outputs.require_storage()
        plan = plan_chapter(request, self.settings)
        await check_webhook_url(request.webhook_url, self.settings)
        for voice, instruct in {(s["voice"], s["instruct"]) for s in plan["segments"]}:
            await self._resolve(voice, instruct)
        synthesis_id = request.synthesis_id or new_synthesis_id()
        existing = await asyncio.to_thread(self.store.state, synthesis_id)
        if existing is not None:
            if existing.get("fingerprint") != plan["fingerprint"]:
                raise SynthesisConflict(
                    f"synthesis {synthesis_id!r} already exists with another request; choose another synthesis_id"
                )
            return await self.status(synthesis_id)
        now = time.time()
        state = {
            "synthesis_id": synthesis_id,
            "status": "queued",
            "done_segments": 0,
            "total_segments": len(plan["segments"]),
            "error": None,
            "output": None,
            "book_id": plan["book_id"],
            "chapter_id": plan["chapter_id"],
            "format": plan["format"],
            "webhook_url": plan["webhook_url"],
            "fingerprint": plan["fingerprint"],
            "owner": self.owner,
            "created_at": now,
            "updated_at": now,
        }
        await asyncio.to_thread(self.store.save_plan, synthesis_id, plan)
        await asyncio.to_thread(self.store.save_state, synthesis_id, state)
        self._start(state)
        return self._view(state)

    async def status(self, synthesis_id: str) -> SynthesisStatus:
        check_synthesis_id(synthesis_id)
        running = self._running.get(synthesis_id)
        if running is not None:
            return self._view(running.state)
        state = await self._state(synthesis_id)
        if state["status"] in ACTIVE_STATUSES:  # run elsewhere, or before a restart: count what S3 holds
            state["done_segments"] = len(await asyncio.to_thread(self.store.done_segments, synthesis_id))
        return await asyncio.to_thread(self._view, state)

    async def all(self) -> list[SynthesisStatus]:
        states = await asyncio.to_thread(self.store.states)
        states = [
            self._running[s["synthesis_id"]].state if s["synthesis_id"] in self._running else s
            for s in states
        ]
        views = await asyncio.to_thread(lambda: [self._view(s) for s in states])
        return sorted(views, key=lambda view: view.created_at)

    async def cancel_or_delete(self, synthesis_id: str) -> dict[str, Any]:
        """Cancel a chapter under way; delete a finished one's outputs and records."""
        check_synthesis_id(synthesis_id)
        async with self._transition(synthesis_id):
            return await self._cancel_or_delete(synthesis_id)

    async def _cancel_or_delete(self, synthesis_id: str) -> dict[str, Any]:
        running = self._running.get(synthesis_id)
        state = running.state if running is not None else await self._state(synthesis_id)
        if state["status"] in ACTIVE_STATUSES:
            if running is not None:
                running.task.cancel()
                await asyncio.gather(running.task, return_exceptions=True)
            await self._finish(state, "cancelled", error="cancelled by DELETE /synthesis")
            return self._view(state).model_dump()
        if running is not None:  # ended but still saving its last state: deleted after that write
            await asyncio.gather(running.task, return_exceptions=True)
        plan = await asyncio.to_thread(self.store.plan, synthesis_id)
        keys = list(output_keys(synthesis_id, plan).values()) if plan else []
        await asyncio.to_thread(self.store.delete, synthesis_id, keys)
        return {"synthesis_id": synthesis_id, "deleted": True}

    async def regenerate(self, synthesis_id: str, index: int, request: RegenerateRequest) -> SynthesisStatus:
        """Render segment ``index`` again and join the chapter anew (the other segments are kept)."""
        check_synthesis_id(synthesis_id)
        async with self._transition(synthesis_id):
            return await self._regenerate(synthesis_id, index, request)

    async def _regenerate(self, synthesis_id: str, index: int, request: RegenerateRequest) -> SynthesisStatus:
        if synthesis_id in self._running:
            raise SynthesisConflict(
                f"synthesis {synthesis_id!r} is still running; regenerate once it has ended"
            )
        state = await self._state(synthesis_id)
        if state["status"] in ACTIVE_STATUSES:
            raise SynthesisConflict(
                f"synthesis {synthesis_id!r} is {state['status']}; regenerate once it has ended"
            )
        plan = await asyncio.to_thread(self.store.plan, synthesis_id)
        segments = plan["segments"]
        if not 0 <= index < len(segments):
            raise SynthesisNotFound(
                f"synthesis {synthesis_id!r} has segments 0 to {len(segments) - 1}, not {index}"
            )
        if request.instruct is not None:
            await self._resolve(segments[index]["voice"], request.instruct)
            segments[index]["instruct"] = request.instruct
        segments[index]["seed"] = request.seed
        await asyncio.to_thread(self.store.save_plan, synthesis_id, plan)
        await asyncio.to_thread(self.store.forget_segment, synthesis_id, index)
        state.update(status="queued", error=None, owner=self.owner, done_segments=len(segments) - 1)
        await self._save(state)
        self._start(state)
        return self._view(state)

    # --- running ---------------------------------------------------------------------------------------------

    def _start(self, state: dict[str, Any]) -> None:
        synthesis_id = state["synthesis_id"]
        task = asyncio.get_running_loop().create_task(self._run(state))
        running = self._running[synthesis_id] = _Running(task, state)
        metrics.ACTIVE_CHAPTERS.set(len(self._running))

        def forget(_task: asyncio.Task[None]) -> None:
            if self._running.get(synthesis_id) is running:
                del self._running[synthesis_id]
            metrics.ACTIVE_CHAPTERS.set(len(self._running))

        task.add_done_callback(forget)

    async def _run(self, state: dict[str, Any]) -> None:
        synthesis_id = state["synthesis_id"]
        try:
            await self._work(state)
            await self._finish(state, "succeeded")
        except asyncio.CancelledError:
            raise  # DELETE writes "cancelled" itself; a stopping server leaves the chapter to resume
        except SynthesisCancelled:
            log.info("chapter %s was cancelled or taken over elsewhere", synthesis_id)
        except Exception as exc:
            log.error("chapter %s failed", synthesis_id, exc_info=exc)
            await self._finish(state, "failed", error=message_for(exc))

    async def _work(self, state: dict[str, Any]) -> None:
        synthesis_id = state["synthesis_id"]
        plan = await asyncio.to_thread(self.store.plan, synthesis_id)
        segments = [Segment(**{k: v for k, v in s.items() if k != "seed"}) for s in plan["segments"]]
        done = await asyncio.to_thread(self.store.done_segments, synthesis_id)
        todo = [s for s in segments if s.index not in done]
        state.update(status="running", owner=self.owner, done_segments=len(segments) - len(todo))
        await self._save(state)
        running = self._running[synthesis_id]
        running.pending = len(todo)
        metrics.PENDING_SEGMENTS.inc(len(todo))
        norms = DurationNorms()
        gate = asyncio.Semaphore(IN_FLIGHT)
        with self.service.opslog.track("synthesis_chapter", job_id=synthesis_id, segments=len(todo)):
            try:
                async with asyncio.TaskGroup() as group:
                    for seg in todo:
                        group.create_task(self._render(state, seg, plan, norms, gate))
            except BaseExceptionGroup as failures:  # the first failure stands for the chapter's
                raise _first(failures) from None
            finally:
                metrics.PENDING_SEGMENTS.dec(running.pending)
            await self._heartbeat(state, always=True)  # cancelled elsewhere meanwhile: no outputs
            keeper = asyncio.create_task(self._keep_alive(state))
            try:
                await self._assemble(state, plan, segments)
            finally:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)

    async def _render(
        self,
        state: dict[str, Any],
        seg: Segment,
        plan: dict[str, Any],
        norms: DurationNorms,
        gate: asyncio.Semaphore,
    ) -> None:
        synthesis_id = state["synthesis_id"]
        # a regeneration's own seed, else the chapter's
        seed = plan["segments"][seg.index].get("seed", plan.get("seed"))
        async with gate:
            resolved = await self._resolve(seg.voice, seg.instruct)
            problems: list[str] = []
            for attempt in range(1, MAX_ATTEMPTS + 1):
                wav = await self._generate(resolved, seg, derived_seed(seed, seg.index, attempt))
                samples = sf.info(io.BytesIO(wav)).frames
                problem = norms.problem(seg.voice, seg.text, samples, SAMPLE_RATE)
                if problem is None or attempt == MAX_ATTEMPTS:
                    break
                problems.append(problem)
                metrics.SEGMENTS.labels("regenerated").inc()
            norms.add(seg.voice, seg.text, samples, SAMPLE_RATE)
            record = {
                "index": seg.index,
                "attempts": attempt,
                "problems": problems,
                "samples": samples,
                "seed": seed,
                "rendered_at": time.time(),
            }
            await asyncio.to_thread(self.store.put_segment, synthesis_id, seg.index, wav, record)
        metrics.SEGMENTS.labels("ok").inc()
        metrics.PENDING_SEGMENTS.dec()
        self._running[synthesis_id].pending -= 1
        state["done_segments"] += 1
        await self._heartbeat(state)

    async def _generate(self, resolved: ResolvedVoice, seg: Segment, seed: int | None) -> bytes:
        item = resolved.item(seg.text, seg.language, seed)
        generating = self.service.generator.generate(resolved.spec, item)
        if resolved.job_id is None:
            return await generating
        return await self.service.catalog.work.run(resolved.job_id, generating)

    async def _heartbeat(self, state: dict[str, Any], always: bool = False) -> None:
        """Save progress now and then; stop when another process has cancelled the chapter."""
        if not always and time.time() - state["updated_at"] < HEARTBEAT_SECONDS:
            return
        saved = await asyncio.to_thread(self.store.state, state["synthesis_id"])
        if saved is None or saved["status"] == "cancelled" or saved.get("owner") != self.owner:
            raise SynthesisCancelled(state["synthesis_id"])  # cancelled, deleted, or taken over by another
        await self._save(state)

    async def _keep_alive(self, state: dict[str, Any]) -> None:
        """Renew the chapter's lease while a long step (the file's assembly) writes no progress."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._save(state)
            except Exception:  # noqa: BLE001 - S3 away for a moment: the next beat tries again
                log.warning("renewing chapter %s failed", state["synthesis_id"], exc_info=True)

    async def _assemble(self, state: dict[str, Any], plan: dict[str, Any], segments: list[Segment]) -> None:
        synthesis_id = state["synthesis_id"]
        records = await asyncio.gather(
            *(asyncio.to_thread(self.store.segment_record, synthesis_id, s.index) for s in segments)
        )
        placed, length = placements([r["samples"] for r in records], [s.pause_ms for s in segments])
        markers = _item_markers(segments, placed)
        keys = output_keys(synthesis_id, plan)
        # a cancelled run's thread stops at its next segment; its folder goes with it
        stop = threading.Event()
        layout = ChapterLayout(synthesis_id, segments, placed, plan["format"], markers)
        await _in_thread_to_its_end(
            publish_chapter,
            self.store,
            layout,
            keys["s3_key"],
            self.settings.data_dir,
            stop,
            on_cancel=stop.set,
        )
        entries = [
            {
                "index": s.index,
                "item": s.item,
                "voice": s.voice,
                "text": s.text,
                "start": where.start / SAMPLE_RATE,
                "end": where.end / SAMPLE_RATE,
                "attempts": record["attempts"],
                "seed": record.get("seed"),
            }
            for s, where, record in zip(segments, placed, records, strict=True)
        ]
        duration = length / SAMPLE_RATE
        manifest = {
            "synthesis_id": synthesis_id,
            "book_id": plan["book_id"],
            "chapter_id": plan["chapter_id"],
            "format": plan["format"],
            "sample_rate": SAMPLE_RATE,
            "duration_s": duration,
            "audio_s3_key": keys["s3_key"],
            "segments": entries,
        }
        cues = [(e["start"], e["end"], e["text"]) for e in entries]
        outputs = [
            (keys["manifest_s3_key"], json.dumps(manifest, indent=1).encode(), "application/json"),
            (keys["subtitles_s3_key"], webvtt(cues).encode(), "text/vtt"),
            (keys["srt_s3_key"], srt(cues).encode(), "application/x-subrip"),
        ]
        await asyncio.gather(*(asyncio.to_thread(self.store.put_output, *output) for output in outputs))
        metrics.AUDIO_SECONDS.inc(duration)
        state["output"] = {**keys, "duration_s": round(duration, 3)}

    async def _finish(self, state: dict[str, Any], status: str, error: str | None = None) -> None:
        state.update(status=status, error=error)
        if status == "succeeded":
            state["done_segments"] = state["total_segments"]
        await self._save(state)
        extra: dict[str, Any] = {"error": error, "progress": self._progress(state).model_dump()}
        if state.get("output"):
            extra["output"] = {k: v for k, v in state["output"].items()}
        self.webhooks.send(
            state.get("webhook_url"), event_body("synthesis", state["synthesis_id"], status, **extra)
        )

    # --- helpers ---------------------------------------------------------------------------------------------

    async def _resolve(self, voice: str, instruct: str) -> ResolvedVoice:
        """The model and speaker of a chapter voice; InvalidInput for one no model speaks."""
        try:
            if voice.lower().startswith(DESIGN_PREFIX):
                description = voice[len(DESIGN_PREFIX) :].strip()
                if not description:
                    raise InvalidInput("voice 'design:' needs a description of the voice after the colon")
                return await self.voices.resolve("design", " ".join(filter(None, (description, instruct))))
            return await self.voices.resolve(voice, instruct or None)
        except OpenAIError as exc:
            raise InvalidInput(f"unknown voice: {exc.message}") from exc

    async def _state(self, synthesis_id: str) -> dict[str, Any]:
        state = await asyncio.to_thread(self.store.state, synthesis_id)
        if state is None:
            raise SynthesisNotFound(f"synthesis {synthesis_id!r} not found")
        return state

    def _transition(self, synthesis_id: str) -> asyncio.Lock:
        return self._transitions.setdefault(synthesis_id, asyncio.Lock())

    async def _save(self, state: dict[str, Any]) -> None:
        lock = self._locks.setdefault(state["synthesis_id"], asyncio.Lock())
        async with lock:  # one write at a time, the newest last
            state["updated_at"] = time.time()
            # a cancelled run's write still lands before the next one (a DELETE's "cancelled" goes after it)
            await _in_thread_to_its_end(self.store.save_state, state["synthesis_id"], dict(state))

    @staticmethod
    def _progress(state: dict[str, Any]) -> SynthesisProgress:
        return SynthesisProgress(done_segments=state["done_segments"], total_segments=state["total_segments"])

    def _view(self, state: dict[str, Any]) -> SynthesisStatus:
        output = None
        if state.get("output") and state["status"] == "succeeded":
            keys = state["output"]
            url = self.service.storage.presigned_url
            output = SynthesisOutput(
                **keys,
                presigned_url=url(keys["s3_key"]),
                manifest_url=url(keys["manifest_s3_key"]),
                subtitles_url=url(keys["subtitles_s3_key"]),
            )
        return SynthesisStatus(
            synthesis_id=state["synthesis_id"],
            status=state["status"],
            progress=self._progress(state),
            output=output,
            error=state.get("error"),
            book_id=state.get("book_id"),
            chapter_id=state.get("chapter_id"),
            format=state["format"],
            created_at=state["created_at"],
            updated_at=state["updated_at"],
        )


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def _in_thread_to_its_end(
    function: Callable[..., Any], *args: Any, on_cancel: Callable[[], None] | None = None
) -> Any:
    """``function(*args)`` in a thread. A caller cancelled meanwhile waits for the thread to end (after
    ``on_cancel``, e.g. asking it to stop) before its cancellation goes on, so nothing the thread writes lands after
    the caller has moved on."""
    running = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        await asyncio.gather(running, return_exceptions=True)
        raise


def _item_markers(segments: list[Segment], placed: list[Any]) -> list[tuple[int, int, str]]:
    """One chapter mark per item: from its first segment's start to its last one's end."""
    spans: dict[int, list[int]] = {}
    for seg, where in zip(segments, placed, strict=True):
        span = spans.setdefault(seg.item, [where.start, where.end])
        span[1] = where.end
    return [(start, end, f"{item + 1}") for item, (start, end) in sorted(spans.items())]
