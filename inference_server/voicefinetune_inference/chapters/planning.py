"""A chapter request checked and turned into its plan (segments and where the outputs go); a bad request raises
InvalidInput before anything is written."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from voicefinetune.input_echo import short_repr
from voicefinetune.schemas import (
    API_JOB_ID_PATTERN,
    MAX_INSTRUCT_CHARS,
    InvalidInput,
    check_language,
    is_segment_id,
)
from voicefinetune.settings import Settings
from voicefinetune_inference.chapters.files import FORMATS
from voicefinetune_inference.chapters.protocol import MAX_CHAPTER_CHARS, MAX_ITEMS, SynthesisRequest
from voicefinetune_inference.chapters.segmenting import Part, paragraphs, segment
from voicefinetune_inference.chapters.store import output_base

DEFAULT_NAME = "chapter"


def fingerprint(request: SynthesisRequest) -> str:
    """What makes two requests the same chapter (the id aside)."""
    body = request.model_dump(exclude={"synthesis_id"})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def new_synthesis_id() -> str:
    return uuid.uuid4().hex[:12]


def check_synthesis_id(value: str) -> str:
    """A synthesis id: shaped like a job id (it names S3 folders and may become a resource name)."""
    if not API_JOB_ID_PATTERN.fullmatch(value):
        raise InvalidInput(
            "synthesis_id must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or "
            f"digit; got {short_repr(value)}"
        )
    return value


def _safe_id(value: str | None, field: str) -> str | None:
    if value is not None and not is_segment_id(value):
        raise InvalidInput(
            f"unsafe {field} {short_repr(value)}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, and no '..'"
        )
    return value


def _instruct(value: str | None) -> str:
    if value and len(value) > MAX_INSTRUCT_CHARS:
        raise InvalidInput(f"instruct is {len(value)} characters long; the limit is {MAX_INSTRUCT_CHARS}")
    return value or ""


def _parts(request: SynthesisRequest) -> list[Part]:
    if (request.text is None) == (request.items is None):
        raise InvalidInput("give either `text` (with `voice`) or `items`, not both and not neither")
    language = check_language(request.language)
    instruct = _instruct(request.instruct)
    if request.text is not None:
        if not request.text.strip():
            raise InvalidInput("text must not be empty")
        if not request.voice:
            raise InvalidInput("`voice` is required with `text`")
        return [
            Part(paragraph, request.voice, instruct, language, request.item_pause_ms)
            for paragraph in paragraphs(request.text)
        ]
    assert request.items is not None
    if not request.items:
        raise InvalidInput("items must not be empty")
    if len(request.items) > MAX_ITEMS:
        raise InvalidInput(f"{len(request.items)} items; the limit is {MAX_ITEMS}")
    parts = []
    for number, item in enumerate(request.items):
        if not item.text.strip():
            raise InvalidInput(f"items[{number}].text must not be empty")
        voice = item.voice or request.voice
        if not voice:
            raise InvalidInput(f"items[{number}] has no voice, and the request gives no default `voice`")
        parts.append(
            Part(
                item.text,
                voice,
                _instruct(item.instruct) if item.instruct is not None else instruct,
                check_language(item.language) if item.language else language,
                request.item_pause_ms if item.pause_ms is None else item.pause_ms,
            )
        )
    return parts


def plan_chapter(request: SynthesisRequest, settings: Settings) -> dict[str, Any]:
    """The plan of a valid request (its id still to be set): segments, pauses, format and output keys."""
    if request.format not in FORMATS:
        raise InvalidInput(f"unknown format {short_repr(request.format)}; use one of: {', '.join(FORMATS)}")
    if request.synthesis_id is not None:
        check_synthesis_id(request.synthesis_id)
    _safe_id(request.book_id, "book_id")
    _safe_id(request.chapter_id, "chapter_id")
    if request.chapter_id and not request.book_id:
        raise InvalidInput("chapter_id needs a book_id")
    name = _safe_id(request.name, "name") or request.chapter_id or DEFAULT_NAME
    chars = len(request.text or "") + sum(len(item.text) for item in request.items or [])
    if chars > MAX_CHAPTER_CHARS:
        raise InvalidInput(f"the chapter is {chars} characters long; the limit is {MAX_CHAPTER_CHARS}")
    segments = segment(_parts(request), sentence_pause_ms=request.pause_ms, max_chars=settings.max_text_chars)
    return {
        "segments": [s.as_dict() for s in segments],
        "format": request.format,
        "book_id": request.book_id,
        "chapter_id": request.chapter_id,
        "name": name,
        "seed": request.seed,
        "webhook_url": request.webhook_url,
        "fingerprint": fingerprint(request),
    }


def output_keys(synthesis_id: str, plan: dict[str, Any]) -> dict[str, str]:
    base = output_base(synthesis_id, plan["book_id"], plan["chapter_id"], plan["name"])
    extension = FORMATS[plan["format"]][0]
    return {
        "s3_key": f"{base}.{extension}",
        "manifest_s3_key": f"{base}.manifest.json",
        "subtitles_s3_key": f"{base}.vtt",
        "srt_s3_key": f"{base}.srt",
    }
