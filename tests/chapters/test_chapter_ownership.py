"""Who runs a chapter: a chapter cancelled by DELETE stays cancelled even when the resumer's listing of S3, read
before the cancel, still shows it running (the resumer reads each candidate afresh before taking it up); of two
processes that find a chapter stale at once, one takes it over (a conditional write of the version both read)."""

from __future__ import annotations

import asyncio
import time

from voicefinetune_inference import InferenceService
from voicefinetune_inference.chapters.protocol import ACTIVE_STATUSES, SynthesisRequest
from voicefinetune_inference.chapters.store import ChapterStore
from voicefinetune_inference.chapters.worker import LEASE_SECONDS, ChapterWorker

from tests.chapters.chapter_helpers import sentences
from voicefinetune.opslog import OpsLog
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage


async def test_a_listing_read_before_a_cancel_does_not_bring_the_chapter_back(
    settings: Settings, storage: Storage
):
    service = InferenceService(settings, storage, OpsLog(settings.state_dir / "ops.jsonl"))
    await service.start()
    worker = ChapterWorker(service)  # not started: no resumer of its own, the test plays it
    try:
        submitted = await worker.submit(SynthesisRequest(text=" ".join(sentences(40)), voice="alloy"))
        synthesis_id = submitted.synthesis_id
        listed = await asyncio.to_thread(worker.store.states)
        assert [s["synthesis_id"] for s in listed] == [synthesis_id]
        assert listed[0]["status"] in ACTIVE_STATUSES

        cancelled = await worker.cancel_or_delete(synthesis_id)
        assert cancelled["status"] == "cancelled"
        await worker.resume(listed)

        assert (await worker.status(synthesis_id)).status == "cancelled"
        assert await worker.cancel_or_delete(synthesis_id) == {"synthesis_id": synthesis_id, "deleted": True}
    finally:
        await worker.stop()
        await service.stop()


def test_of_two_processes_that_read_a_stale_chapter_at_once_one_claims_it(storage: Storage):
    store = ChapterStore(storage)
    stale = {
        "synthesis_id": "stale-1",
        "status": "running",
        "owner": "gone",
        "updated_at": time.time() - 3600,
    }
    store.save_state("stale-1", stale)
    (seen_by_a, version_a), (seen_by_b, version_b) = (
        store.versioned_state("stale-1"),
        store.versioned_state("stale-1"),
    )
    assert seen_by_a == seen_by_b == stale and version_a == version_b
    assert store.claim("stale-1", {**seen_by_a, "owner": "replica-a"}, version_a) is True
    assert store.claim("stale-1", {**seen_by_b, "owner": "replica-b"}, version_b) is False
    assert store.state("stale-1")["owner"] == "replica-a"


async def test_the_resumer_takes_over_a_stale_chapter_of_another_process_as_its_own(
    settings: Settings, storage: Storage
):
    service = InferenceService(settings, storage, OpsLog(settings.state_dir / "ops.jsonl"))
    await service.start()
    gone, taker = ChapterWorker(service, owner="gone"), ChapterWorker(service, owner="taker")
    try:
        submitted = await gone.submit(SynthesisRequest(text=" ".join(sentences(12)), voice="alloy"))
        synthesis_id = submitted.synthesis_id
        deadline = time.monotonic() + 30
        while len(done := await asyncio.to_thread(gone.store.done_segments, synthesis_id)) < 2:
            assert time.monotonic() < deadline, "the first process rendered no segments"
            await asyncio.sleep(0.02)
        await gone.stop()  # its process stops: the chapter stays running in S3, its lease runs out
        state = await asyncio.to_thread(taker.store.state, synthesis_id)
        assert state["status"] in ACTIVE_STATUSES
        # as its last heartbeat left it: before any segment was done, long ago (written again until it stays: a
        # write of the stopped process may still have been on its way)
        state.update(done_segments=0, updated_at=time.time() - LEASE_SECONDS - 1)
        deadline = time.monotonic() + 10
        while True:
            await asyncio.to_thread(taker.store.save_state, synthesis_id, state)
            await asyncio.sleep(0.2)
            if await asyncio.to_thread(taker.store.state, synthesis_id) == state:
                break
            assert time.monotonic() < deadline, "the stopped process kept writing the chapter's state"

        await taker.resume(await asyncio.to_thread(taker.store.states))
        assert (await asyncio.to_thread(taker.store.state, synthesis_id))["owner"] == "taker"
        # counted from S3 at once, not from the last heartbeat of the process that is gone
        assert (await taker.status(synthesis_id)).progress.done_segments >= len(done)
        deadline = time.monotonic() + 45
        while (await taker.status(synthesis_id)).status in ACTIVE_STATUSES:
            assert time.monotonic() < deadline, "the taken-over chapter did not finish"
            await asyncio.sleep(0.1)
        assert (await taker.status(synthesis_id)).status == "succeeded"
    finally:
        await taker.stop()
        await service.stop()
