"""The bodies of ``/synthesis``: a chapter asked for, its status, a segment's regeneration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from voicefinetune.schemas import Seed

SENTENCE_PAUSE_MS = 250
ITEM_PAUSE_MS = 600
MAX_PAUSE_MS = 10_000
MAX_CHAPTER_CHARS = 250_000  # the whole chapter: text, or all items together
MAX_ITEMS = 10_000
DEFAULT_FORMAT = "wav"

SynthesisStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE_STATUSES = ("queued", "running")


class ChapterItem(BaseModel):
    text: str = Field(description="What this voice says (split at sentence ends like `text`)")
    voice: str | None = Field(None, description="Default: the request's `voice`")
    instruct: str | None = Field(None, description="Default: the request's `instruct`")
    language: str | None = Field(None, description="Default: the request's `language`")
    pause_ms: int | None = Field(
        None, ge=0, le=MAX_PAUSE_MS, description="Silence after this item (default: `item_pause_ms`)"
    )


class SynthesisRequest(BaseModel):
    text: str | None = Field(
        None, description="The chapter in one voice; a blank line ends a paragraph. Give `text` or `items`"
    )
    items: list[ChapterItem] | None = Field(
        None, description="The chapter as ordered parts, each in its voice"
    )
    voice: str | None = Field(
        None,
        description="A ready fine-tuned voice (job id or speaker name), `design:<description of the voice>`, "
        "`design` (with `instruct`) or a preset name (GET /v1/audio/voices)",
    )
    language: str | None = Field(None, description="Default English")
    instruct: str | None = None
    book_id: str | None = None
    chapter_id: str | None = None
    name: str | None = Field(
        None, description="File name without extension (default: chapter_id, else 'chapter')"
    )
    format: str = Field(DEFAULT_FORMAT, description="wav, flac, mp3, opus or m4b (one chapter mark per item)")
    pause_ms: int = Field(SENTENCE_PAUSE_MS, ge=0, le=MAX_PAUSE_MS, description="Silence between sentences")
    item_pause_ms: int = Field(
        ITEM_PAUSE_MS, ge=0, le=MAX_PAUSE_MS, description="Silence between items and paragraphs"
    )
    seed: Seed | None = Field(
        None,
        description="Fixes each segment's sampling (a seed per segment derived from it; continuous scheduler, see "
        "docs/chapters.md); recorded in the manifest",
    )
    webhook_url: str | None = Field(None, description="Called (signed POST) when the chapter ends")
    synthesis_id: str | None = Field(
        None, description="Your own id: sending the same request again is a no-op"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "items": [
                        {"text": "It was a dark and stormy night.", "voice": "narrator-job"},
                        {"text": "Who goes there?", "voice": "design:an old man, hoarse and slow"},
                    ],
                    "book_id": "book1",
                    "chapter_id": "ch01",
                    "format": "mp3",
                }
            ]
        }
    }


class RegenerateRequest(BaseModel):
    seed: Seed | None = Field(
        None,
        description="Renders the segment as in a chapter of this seed (the chapter's own seed reproduces it); "
        "none: a new sample",
    )
    instruct: str | None = Field(None, description="A new instruction for this segment")


class SynthesisProgress(BaseModel):
    done_segments: int
    total_segments: int


class SynthesisOutput(BaseModel):
    s3_key: str
    manifest_s3_key: str
    subtitles_s3_key: str = Field(description="WebVTT")
    srt_s3_key: str
    presigned_url: str
    manifest_url: str
    subtitles_url: str
    duration_s: float


class SynthesisStatus(BaseModel):
    synthesis_id: str
    status: SynthesisStatusName
    progress: SynthesisProgress
    output: SynthesisOutput | None = None
    error: str | None = None
    book_id: str | None = None
    chapter_id: str | None = None
    format: str
    created_at: float
    updated_at: float
