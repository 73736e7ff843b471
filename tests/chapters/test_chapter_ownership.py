"""Who runs a chapter: a chapter cancelled by DELETE stays cancelled even when the resumer's listing of S3, read
before the cancel, still shows it running (the resumer reads each candidate afresh before taking it up)."""

from __future__ import annotations

import asyncio

from voicefinetune_inference import InferenceService
from voicefinetune_inference.chapters.protocol import ACTIVE_STATUSES, SynthesisRequest
from voicefinetune_inference.chapters.worker import ChapterWorker

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
