"""A chapter cut into segments at sentence boundaries: the streaming splitter (`audio.sentences`) after the full
stops that end no sentence (abbreviations, initials) are protected; decimals never split (no space follows their
point). Each segment keeps the pause that follows it: the sentence pause inside a paragraph or item, the item pause
after one (a blank line ends a paragraph of plain text)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from voicefinetune_inference.audio.sentences import split_sentences

MAX_SEGMENT_CHARS = 400
_PARAGRAPH = re.compile(r"\n\s*\n")
# A full stop that ends no sentence: a common abbreviation, or an initial (one capital letter, as in "J. R. R.").
_NOT_AN_END = re.compile(
    r"(?<![\w.])(?:Mr|Mrs|Ms|Mx|Dr|Prof|Sr|Jr|St|Mt|Ft|vs|etc|approx|cf|al|Gen|Col|Capt|Lt|Sgt|Rev|Hon|Gov|Sen|"
    r"Rep|Inc|Ltd|Co|Corp|No|Nos|Vol|Fig|pp|p|ch|Ch|e\.g|i\.e|a\.m|p\.m|U\.S|[A-Z])\.(\s+)(?=\S)"
)
_KEEP = "\ue000"  # a private-use character: not whitespace, so the splitter does not cut there


@dataclass(frozen=True)
class Part:
    """One item of a chapter as asked for (plain text is one item per paragraph)."""

    text: str
    voice: str
    instruct: str
    language: str
    pause_ms: int  # after the item


@dataclass(frozen=True)
class Segment:
    index: int
    item: int
    text: str
    voice: str
    instruct: str
    language: str
    pause_ms: int  # after the segment (0 after the last)

    def as_dict(self) -> dict:
        return asdict(self)


def sentences(text: str, max_chars: int) -> list[str]:
    """``text`` split at sentence ends, each piece at most ``max_chars`` long (a longer sentence is cut at a comma or
    a space, never inside a word)."""
    protected = _NOT_AN_END.sub(lambda m: m.group(0).replace(m.group(1), _KEEP), text)
    return [piece.replace(_KEEP, " ") for piece in split_sentences(protected, max_chars=max_chars)]


def paragraphs(text: str) -> list[str]:
    return [p for p in _PARAGRAPH.split(text) if p.strip()]


def segment(parts: list[Part], *, sentence_pause_ms: int, max_chars: int) -> list[Segment]:
    max_chars = min(max_chars, MAX_SEGMENT_CHARS)
    segments: list[Segment] = []
    for item, part in enumerate(parts):
        pieces = sentences(part.text, max_chars)
        for position, piece in enumerate(pieces):
            last = position == len(pieces) - 1
            segments.append(
                Segment(
                    index=len(segments),
                    item=item,
                    text=piece,
                    voice=part.voice,
                    instruct=part.instruct,
                    language=part.language,
                    pause_ms=part.pause_ms if last else sentence_pause_ms,
                )
            )
    if segments:
        segments[-1] = Segment(**{**segments[-1].as_dict(), "pause_ms": 0})
    return segments
